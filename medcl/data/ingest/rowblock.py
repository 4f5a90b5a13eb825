"""Row metadata by column: what the array-file workers hand back instead of a dict per row.

An ingest of a MedMNIST file of 10⁶ images used to build, pickle, copy and serialise 10⁶ row
dicts in the main process, which kept a second worker from paying off. A :class:`RowBlock` holds
the same rows as one list per field, or one value for a field every row shares (the file, the
split, the image size …). Blocks concatenate without touching the rows, the manifest frame is
built from their columns, and :meth:`RowBlock.to_json` writes the exact text ``json.dumps`` gives
for the list of row dicts, so the incremental state file is the same byte for byte.

Iterating a block yields its rows as dicts (keys in field order), so code written for lists of
rows keeps working, only slower.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

_COMPACT = {"separators": (",", ":")}


def json_text(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))`` (ASCII), fast for strings and ints."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is int:
        return int.__repr__(value)
    return json.dumps(value, **_COMPACT)


def _json_column(values: list) -> list[str]:
    """:func:`json_text` of every value (one C call per value for all-string or all-int lists)."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return list(map(encode_basestring_ascii, values))
    if kinds == {int}:
        return list(map(int.__repr__, values))
    return [json_text(v) for v in values]


class ShardKeys(Sequence[str]):
    """The cache keys of rows stored in shards, ``<shard>#<row>``, made when read: a chunk of
    8192 rows sends its shard's name and its row count, not 8192 strings.

    Args:
        parts: ``(shard, rows)`` pairs, in row order.
    """

    __slots__ = ("parts", "_ends")

    def __init__(self, parts: Sequence[tuple[str, int]]) -> None:
        self.parts = [(str(s), int(n)) for s, n in parts]
        self._ends = list(itertools.accumulate(n for _, n in self.parts))

    def __getstate__(self) -> list[tuple[str, int]]:
        return self.parts

    def __setstate__(self, parts: list[tuple[str, int]]) -> None:
        self.__init__(parts)  # type: ignore[misc]

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return list(self)[i]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self._ends, i)
        shard, _ = self.parts[k]
        return f"{shard}#{i - (self._ends[k - 1] if k else 0)}"

    def __iter__(self) -> Iterator[str]:
        for shard, n in self.parts:
            yield from (f"{shard}#{j}" for j in range(n))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ShardKeys):
            return self.parts == other.parts
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def shards(self) -> set[str]:
        """The shards' names."""
        return {s for s, n in self.parts if n}

    def refs(self, root: str) -> list[str]:
        """:func:`medcl.data.cache.cache_ref` of every key (``root`` absolute)."""
        return [f"{root}/{s[:2]}/{s}.npy#{j}" for s, n in self.parts for j in range(n)]


class RowBlock:
    """Rows in order, held by column.

    Args:
        n: Number of rows.
        fields: Field names in the order a row dict lists them.
        columns: Per-row values of the fields that vary (lists of length ``n``, or
            :class:`ShardKeys`).
        constants: Values of the fields every row shares.

    Raises:
        ValueError: A field missing from both or given in both, or a column of another length.
    """

    __slots__ = ("n", "fields", "columns", "constants", "rendered", "exact")

    def __init__(
        self,
        n: int,
        fields: Sequence[str],
        columns: dict[str, list],
        constants: dict[str, Any],
    ) -> None:
        self.n = int(n)
        self.fields = tuple(fields)
        self.columns = columns
        self.constants = constants
        self.rendered: tuple[str, Any, str] | None = None  # see render_as
        self.exact: str | None = None  # to_json() of this very block, inside the brackets
        if set(columns) & set(constants) or set(columns) | set(constants) != set(self.fields):
            raise ValueError("every field must be either a column or a constant")
        for name, col in columns.items():
            if len(col) != self.n:
                raise ValueError(f"column {name} has {len(col)} values for {self.n} rows")

    def __getstate__(self) -> tuple:  # slots: pickled as a tuple (workers send blocks back)
        return self.n, self.fields, self.columns, self.constants, self.rendered, self.exact

    def __setstate__(self, state: tuple) -> None:
        self.n, self.fields, self.columns, self.constants, self.rendered, self.exact = state

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[dict]:
        """The rows as dicts (lists among the constants copied for every row)."""
        cols = [self.columns.get(f) for f in self.fields]
        for i in range(self.n):
            yield {
                f: (c[i] if c is not None else _copy(self.constants[f]))
                for f, c in zip(self.fields, cols, strict=True)
            }

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowBlock):
            return list(self) == list(other)
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RowBlock({self.n} rows, columns {sorted(self.columns)})"

    def column(self, name: str) -> list:
        """The values of field ``name``, one per row (a constant repeated)."""
        if name in self.columns:
            return self.columns[name]
        return [self.constants[name]] * self.n

    def counts(self, name: str) -> Counter:
        """How many rows hold each value of field ``name``."""
        if name in self.constants:
            return Counter({self.constants[name]: self.n}) if self.n else Counter()
        return Counter(self.columns[name])

    def distinct(self, name: str) -> set:
        """The distinct values of field ``name`` (hashable values only)."""
        if name in self.constants:
            return {self.constants[name]} if self.n else set()
        return set(self.columns[name])

    def with_field(self, name: str, value: Any, per_row: bool) -> RowBlock:
        """A new block with field ``name`` set: ``value`` is a list of one value per row when
        ``per_row``, else the value every row shares (a new field goes last in the field order)."""
        columns, constants = dict(self.columns), dict(self.constants)
        columns.pop(name, None)
        constants.pop(name, None)
        fields = self.fields if name in self.fields else (*self.fields, name)
        if per_row:
            columns[name] = value
        else:
            constants[name] = value
        out = RowBlock(self.n, fields, columns, constants)
        r = self.rendered
        if not per_row and r is not None and r[0] == name and _same(r[1], value):
            out.exact = r[2]
        return out

    def render_as(self, name: str, value: Any) -> RowBlock:
        """Render now (in a worker) the JSON of the rows with field ``name`` set to ``value``, for
        :meth:`to_json` of ``self.with_field(name, value, per_row=False)``; returns ``self``."""
        self.rendered = (name, value, self.with_field(name, value, per_row=False).to_json()[1:-1])
        return self

    def mapped(self, name: str, fn: Callable[[Any], Any]) -> RowBlock:
        """A new block with ``fn`` applied to each value of field ``name`` (once for a constant)."""
        if name in self.constants:
            return self.with_field(name, fn(self.constants[name]), per_row=False)
        return self.with_field(name, [fn(v) for v in self.columns[name]], per_row=True)

    def select(self, fields: Sequence[str], default: Any = None) -> RowBlock:
        """A new block of ``fields`` in that order (a field the block lacks: ``default``)."""
        columns = {f: self.columns[f] for f in fields if f in self.columns}
        constants = {f: self.constants.get(f, default) for f in fields if f not in columns}
        return RowBlock(self.n, fields, columns, constants)

    @classmethod
    def from_dicts(
        cls, rows: Sequence[dict], fields: Sequence[str], default: Any = None
    ) -> RowBlock:
        """A block of ``rows`` (each field a column; a missing key takes ``default``)."""
        columns = {f: [r.get(f, default) for r in rows] for f in fields}
        return cls(len(rows), fields, columns, {})

    @classmethod
    def concat(cls, blocks: Iterable[RowBlock]) -> RowBlock:
        """The rows of ``blocks`` one after the other (same fields, in the same order)."""
        blocks = [b for b in blocks]
        if not blocks:
            raise ValueError("nothing to concatenate")
        fields = blocks[0].fields
        if any(b.fields != fields for b in blocks):
            raise ValueError("blocks with different fields")
        blocks = [b for b in blocks if b.n] or blocks[:1]
        n = sum(b.n for b in blocks)
        columns: dict[str, list] = {}
        constants: dict[str, Any] = {}
        for f in fields:
            values = [b.constants[f] for b in blocks if f in b.constants]
            if len(values) == len(blocks) and all(_same(v, values[0]) for v in values):
                constants[f] = values[0]
                continue
            cols = [b.columns.get(f) for b in blocks]
            if all(isinstance(c, ShardKeys) for c in cols):
                columns[f] = ShardKeys([p for c in cols for p in c.parts])  # type: ignore[union-attr]
                continue
            col: list = []
            for b in blocks:
                col.extend(b.columns[f] if f in b.columns else [b.constants[f]] * b.n)
            columns[f] = col
        out = cls(n, fields, columns, constants)
        r = blocks[0].rendered
        if r is not None and all(
            b.rendered is not None and b.rendered[0] == r[0] and _same(b.rendered[1], r[1])
            for b in blocks
        ):
            out.rendered = (r[0], r[1], ",".join(b.rendered[2] for b in blocks))  # type: ignore[index]
        if all(b.exact is not None for b in blocks):
            out.exact = ",".join(b.exact for b in blocks)  # type: ignore[misc]
        return out

    def to_json(self) -> str:
        """``json.dumps(list(self), separators=(",", ":"))``, built by column (or the text
        rendered before, see :meth:`render_as`)."""
        if self.exact is not None:
            return "[" + self.exact + "]"
        if not self.n:
            return "[]"
        parts = []
        varying = []
        for i, f in enumerate(self.fields):
            key = (("," if i else "{") + encode_basestring_ascii(f) + ":").replace("%", "%%")
            if f in self.constants:
                parts.append(key + json_text(self.constants[f]).replace("%", "%%"))
                continue
            values = self.columns[f]
            kinds = set(map(type, values))
            if kinds == {str} and not _ESCAPED.search("".join(values)):
                parts.append(key + '"%s"')  # nothing to escape: the text itself, quoted
                varying.append(values)
            elif kinds == {int}:
                parts.append(key + "%s")  # str(int) is JSON's
                varying.append(values)
            else:
                parts.append(key + "%s")
                varying.append(_json_column(values))
        template = "".join(parts) + "}"
        if not varying:
            return "[" + ",".join([template.replace("%%", "%")] * self.n) + "]"
        return "[" + ",".join([template % t for t in zip(*varying, strict=True)]) + "]"


_ESCAPED = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
"""A character JSON (ASCII) escapes: a control or non-ASCII character, a quote, a backslash."""


def _copy(value: Any) -> Any:
    """A fresh copy of a shared list or dict value (a row may be changed in place)."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type (``1`` and ``True`` differ in JSON)."""
    return type(a) is type(b) and a == b
