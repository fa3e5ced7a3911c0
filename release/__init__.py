"""The release path: images built on a base pinned by digest, and the installation pinned to the operator image's
digest. Run from the checkout: `python -m release image ...`, `python -m release manifests ...`
(docs/operator.md#images-and-release)."""
