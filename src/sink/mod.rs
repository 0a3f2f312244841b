//! Sinks: the joined output, the late-data side output and the dead-letter output.

pub mod format;
