//! Unix domain sockets and FIFOs (compiled only on Unix).
