"""Development tools, off the request path: the FHIR sandbox server, the rule-case format, rule
coverage and CDS Hooks conformance checks. The service never imports them."""
