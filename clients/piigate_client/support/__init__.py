"""`piigate-support`: a support desk's lookup of customers' data through piigate.

An agent names customers (one on the command line, or many as CSV or lines on standard
input) and the ticket they work on; piigate answers with what the support profile
discloses (a masked SSN, say), found through the customer's binding tag, so the console
never holds a customer's token. The agent's own access token is the call's actor
(`actor_token`, after RFC 8693), the service's client credential or certificate its
caller. Needs the `piigate-client[support]` extra (rich) for the table and progress bar.

Modules, in the order a lookup travels:

    options    argv + environment + credential files -> frozen `Options` (read once)
    customers  CSV or lines -> `Customer` values, with line numbers in every complaint
    retry      when to call again: RetryInfo first, bounded attempts, never a refusal
    lookup     the run: chunks of customers, retries, one `Outcome` per customer in order
    gateway    the gRPC edge: requests, the caller credential, failures -> `Failure`
    output     outcomes -> table, JSON lines or CSV: the disclosed values only
    progress   the progress bar on standard error, only on a terminal
    main       composition, exit codes
"""
