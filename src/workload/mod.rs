//! Load on a running bank, and the formats it is described in: the course's scenario files and
//! their runner ([`scenario`], [`course`]), `bank bench` ([`bench`]), and Jepsen's bank workload
//! recording a history for [`crate::check`] ([`jepsen`]).

pub mod bench;
pub mod course;
pub mod jepsen;
pub mod scenario;
