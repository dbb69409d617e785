//! Writing reports: human text and JSON Lines on stdout, progress on stderr.
