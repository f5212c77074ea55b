//! KQL: AST, printer, parser and evaluator over in-memory tables.
