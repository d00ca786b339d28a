"""Who is asking and what they may do: kube-apiserver's authorization chain.

- `authorizer`: the request's attributes, the user they carry, decisions (Allow, Deny,
  NoOpinion), a union of authorizers, the `system:masters` authorizer, and the 403
  Status worded as Kubernetes words it.
- `rbac`: the RBAC authorizer over an index of roles and bindings kept by subject, the
  feed that keeps that index current from the API server's watch cache, and RBAC's
  escalation check for writes of roles and bindings.
- `node`: the Node authorizer (what a kubelet may read and write), over an index of the
  pods bound to each node and the objects they use, kept current from the watch cache.
- `noderestriction`: NodeRestriction admission, which keeps a node to its own Node,
  Lease and pods.
- `bootstrappolicy`: Kubernetes' default roles and bindings, reconciled into storage
  when the API server starts.
- `authn`: who is asking: the authenticator chain (x509 client certificates, bearer
  tokens with bootstrap tokens, anonymous).
- `serviceaccount`: ServiceAccount tokens: issued by `serviceaccounts/<name>/token`
  (TokenRequest), verified by the first token authenticator of the chain.
- `reviews`: SubjectAccessReview, SelfSubjectAccessReview, SelfSubjectRulesReview,
  SelfSubjectReview and TokenReview.

apiserver/app.py puts them in the request path: the user in `scope["user"]`, the
authorizers' attributes in `scope["attributes"]`.
"""
