"""The local cluster: a real single-node Kubernetes (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubelet, containerd + runc, bridge CNI, kube-proxy, CoreDNS) built from Go modules and run as host processes, with the
images, registry and local stand-ins (Service Bus emulator, Teams, PostgreSQL) that pods reach on the node's bridge."""
