//! Solar event tracking: SDO-like frames in ([`frame`], FITS or Arrow IPC), their
//! world coordinates ([`wcs`]) and the differential rotation ([`rotation`]); the
//! tracker ([`tracker`]: rotation prior + Siamese CNN correction, [`net`]) learning
//! from sparse catalogue labels; synthetic sequences with exact truth ([`synth`]),
//! scoring ([`eval`]), real region positions ([`srs`]) and the pipeline ([`stream`]:
//! its file [`config`], inputs [`input`], outputs [`publish`], state [`checkpoint`],
//! report [`summary`], embedded broker [`seed`]).

pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod frame;
pub mod input;
pub mod net;
pub mod publish;
pub mod rotation;
pub mod seed;
pub mod srs;
pub mod stream;
pub mod summary;
pub mod synth;
pub mod track;
pub mod tracker;
pub mod wcs;
