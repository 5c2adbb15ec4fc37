"""What a blob's name looks like: the lowercase hex sha256 of its bytes, for hub and clients alike.

Use it with ``fullmatch``: a pattern anchored with ``^...$`` and used with ``match`` also
takes a name followed by a newline, since ``$`` matches before a final newline.
"""

from __future__ import annotations

import re

SHA256_RE = re.compile(r"[0-9a-f]{64}")
