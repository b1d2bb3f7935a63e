"""The read-only dashboard at `/`: server-rendered pages with server-side SVG charts."""
