//! kiln-packaging: man pages, completions and .deb metadata (placeholder until issue 8 lands).
