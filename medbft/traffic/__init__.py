"""Client traffic for simulated and real runs: the load shape (workload.py) and, on the
healthcare ledger, what each identity submits (ledger.py and the domain modules it uses).

Why this exists: one place to import the ledger traffic from, whatever module of this
package builds which transactions. `Workload` is imported from medbft.traffic.workload
(it needs the metrics and the client core, which the ledger traffic does not).
"""

from medbft.traffic.ledger import FLOWS, LedgerTraffic
from medbft.traffic.world import Pending

__all__ = ["FLOWS", "LedgerTraffic", "Pending"]
