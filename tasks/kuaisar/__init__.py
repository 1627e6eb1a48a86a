"""The KuaiSAR layout: the data contract, the feature spec and labels, the generator's world."""
