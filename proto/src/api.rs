//! API keys, versions, and the flatbuffers schema (generated code lives in `generated/`).
