//! Solar event tracking: SDO-like frames in ([`frame`], FITS or Arrow IPC), their
//! world coordinates ([`wcs`]) and the differential rotation ([`rotation`]); the
//! tracker ([`tracker`]: rotation prior + Siamese CNN correction, [`net`]) learning
//! from sparse catalogue labels; synthetic sequences with exact truth ([`synth`]),
//! scoring ([`eval`]), real region positions ([`srs`]) and the pipeline ([`stream`]).

pub mod checkpoint;
pub mod eval;
pub mod frame;
pub mod net;
pub mod rotation;
pub mod srs;
pub mod stream;
pub mod synth;
pub mod track;
pub mod tracker;
pub mod wcs;
