//! The enforcing gateway: the session core (in-process, clock injected), enforcement, the
//! hash-chained audit log and recordings; transports and upstream connectors at the edge.
