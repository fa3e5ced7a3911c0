"""The DigestPipeline API (group digest.dev, version v1alpha1): Pydantic models are the single source of truth."""

GROUP = "digest.dev"
VERSION = "v1alpha1"
KIND = "DigestPipeline"
PLURAL = "digestpipelines"
SINGULAR = "digestpipeline"
SHORT_NAMES = ("dgp",)
API_VERSION = f"{GROUP}/{VERSION}"
