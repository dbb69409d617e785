//! Benchmarks of storepatch against its peers (see README.md); the code lives in `benches/`.
