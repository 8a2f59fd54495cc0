//! Fast, secure local IPC.
