"""Migration writes, one module per thing they own. Import the module you need:

- ``plans``    the wizard's plan, one preflight per candidate destination, its bookkeeping and recheck
- ``live``     what a person asks of a live migration: request, abort, force complete, reconcile
- ``slots``    migration slots per host: claim, release, hand free ones to waiting migrations
- ``records``  the runner's and reconciler's record keeping: begin … finish, heartbeat, samples, controls
- ``cold``     cold migration: the request and the runner's record keeping
- ``repairs``  image permission repairs a preflight offers
- ``refusals`` a refused request: audited in a transaction of its own, then ServiceRefused
- ``facts``    the facts of the last full preflight gather per guest and pair, for the runner's fast path
- ``events``   telling pages that a migration changed (through core.broadcast)

Each service runs in one transaction and writes its audit event there. Jobs are enqueued (by
dotted path, so no service imports a job module) and browsers told only once it commits. No
host I/O here: the runners and the reconciler do that and record what they found here.
"""
