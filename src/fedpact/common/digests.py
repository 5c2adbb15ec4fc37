"""What a blob's name looks like: the lowercase hex sha256 of its bytes, for hub and clients alike."""

from __future__ import annotations

import re

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
