//! An offline stand-in for Entra ID, Graph hunting and the MDE API, serving recorded tables.
