//! Starting branches: a whole cluster in one process ([`local`]) and one branch per process
//! ([`standalone`]), created, resumed, refused or rejoined from what their disks and peers say.

pub mod local;
pub mod standalone;
