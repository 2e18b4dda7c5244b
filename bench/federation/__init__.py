"""Federation benchmark: inbound /send, outbound fan-out, a large remote join (python -m bench.federation)."""
