"""API Priority and Fairness (flowcontrol.apiserver.k8s.io/v1): the kinds' strategies
(strategy.py), the default objects (bootstrap.py) and the request filter (apf.py)."""
