//! The strict sliding-window limiter and the counter stores behind it.
