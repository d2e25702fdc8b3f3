"""A SMART-on-FHIR facade over piigate, runnable offline (`make example-smart`).

Modules, in the order a request travels:

    smart_app  the app side: discovery, authorization code with PKCE, FHIR reads
    authz      the development SMART authorization server (a layer over the dev issuer)
    facade     the FHIR R4 facade: `GET /Patient/{id}` through piigate
    resources  the FHIR resources it serves, built with fhir.resources
    stack      the composition root: vault, dev issuer, authz, facade and piigate
    __main__   the walk-through (`python -m examples.smart_on_fhir`)

See README.md beside this file for the flow.
"""
