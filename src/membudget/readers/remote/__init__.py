"""Where a model's bytes come from when they are not on this disk: byte ranges, never weights.

Sources resolve to byte ranges here; the GGUF and safetensors parsers above are the same code
for local and remote files (a :class:`~.source.RemoteSource` fills the parser's buffer as it
asks for offsets, in growing ranges).

- :mod:`.http`: ranged GETs with timeouts, a redirect cap and bounded bodies;
- :mod:`.source`: a remote file as the parsers' ``Source``;
- :mod:`.cache`: parsed-header bytes and repo listings, in the user cache directory;
- :mod:`.hub`: Hugging Face Hub repos (``OWNER/REPO``, ``OWNER/REPO:QUANT``) and plain URLs;
- :mod:`.ollama`: models in Ollama's local store (``ollama:NAME[:TAG]``), offline.
"""

from __future__ import annotations

__all__: list[str] = []
