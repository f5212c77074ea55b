//! Detection parsers (Vectra, Suricata EVE, Zeek) and the ingest service.
