"""Repository tooling that is not course library: re-executing notebooks, builds."""
