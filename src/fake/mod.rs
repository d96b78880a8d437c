//! fake upstream
