//! Microsoft Defender for Endpoint and Graph client: tokens, hunting, machines, isolation, portal links.
