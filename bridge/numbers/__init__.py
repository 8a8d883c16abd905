"""Numbers and tenants at run time: the records (``model``), where they are kept (``store``),
this worker's view of them (``catalog``) and the engine per number behind one face
(``switchboard``). Import the modules themselves: this package re-exports nothing, so the
calls package can use the switchboard without importing the store's dependencies."""
