"""The one way components reach the API server.

rest (Client, SyncClient, retry_on_conflict), transport (LeanTransport, the
HTTP/1.1 transport under Client), watch (Watch), informer (Informer,
SharedInformerFactory, Indexer), workqueue (WorkQueue, RateLimitingQueue), leaderelection
(LeaderElector), events (EventRecorder), kubeconfig (load, KubeConfig, Connection),
proxy (proxy-url and HTTP(S)_PROXY / NO_PROXY rules), execcred (exec credential
plugins), useragent (client-go's User-Agent), clock (Clock: wall and monotonic time;
RealClock, FakeClock). Each module states its guarantees at its top.
"""
