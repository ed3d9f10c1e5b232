//! Error codes: one enum for the whole protocol, each with a retriable flag.
