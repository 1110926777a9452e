"""Which bytes of a Stat pickle make one field's value and nothing else: the pickle's dataflow.

A live cluster rewrites its record every 0.5 s, and what moves between rewrites is a few
values: the timestamp, the queue sizes, now and then the reincarnations. `analyse` says, for
a pickle that decoded in full, which of its bytes are such values ("slots"): the payload of
an int opcode (BININT1, BININT2, BININT) that is the value of one key of the Stat's state
dict, the 10 state bytes of a `datetime(<bytes>, <tzinfo>)` call that is, the text of a
string that is (the host), the payload of each int of a list that is (the workers), or the
number of a `UUID` that is (the cluster id: `UUID.__new__(UUID)` and one BUILD with
`{"int": <LONG>}`). A pickle equal to it outside its slots unpickles to the same state but
for those keys' values, which are what the new bytes make (memo.KeyMemo rebuilds them; the
decoder checks them).

Why that holds: the unpickler is a straight-line machine. Outside the slots the two pickles
are the same bytes, so they parse into the same opcodes, lengths and memo indices (a slot is
only ever a fixed-size argument, or what a length byte counts), and every opcode does the
same to the same objects, except that a slot's opcode pushes another int or bytes object.
So `_run` follows every object through the stack and the memo as the unpickler would, and a
payload is a slot only when its object is pushed exactly once (never fetched again with
BINGET, never DUPed) and lands as a value in the state dict: the one dict the Stat's single
BUILD receives, itself pushed once, whose keys are all distinct str literals. A crafted
pickle could set "task_q_size" twice, feed one int to two keys or to a call, or fill the
dict through the memo; none of those gives a slot. A datetime slot's bytes go into a
one-use tuple, the arguments of a one-use call of the datetime global (as RecordUnpickler
resolves it), whose result is the value; a UUID slot's number goes into a one-use dict
whose one key is the text "int", the one BUILD of a one-use NEWOBJ of the UUID global with
no arguments; a list's items are one-use ints in a one-use list. Then no other opcode ever
sees a slot's object: new bytes there change that one value, and nothing else. A slot's
width is structure (an opcode's, or a length prefix), so it is the same wherever it applies.

Anything the model does not follow exactly (an opcode reaching below a MARK, a BINGET of an
unset index, odd item counts, a key that is not literal text) gives no analysis at all: the
memo then decodes in full. The model is stricter than the unpickler, never looser.

`Flow.unread` lists the bytes the analysis never read: the payloads of numbers and bytes
literals, and the text of any string that is neither a key nor a global's name (a host, a
status) nor the key of a UUID's state. Their content changes no opcode, length, memo
index, key or global: a pickle that differs from an analysed one only there and in the
slots has the same flow and the same slots, so the analysis is reused rather than run again
(it costs some 40 us), by this key and any other.
"""

from __future__ import annotations

import pickle
from datetime import datetime
from typing import Any, Final, NamedTuple
from uuid import UUID

from qwatch.decode.safe_pickle import ALLOWED_GLOBALS, PY2_STR_ENCODING

# The state keys a slot may be found for: the ClusterStat fields an int, a datetime, a text,
# a list of ints or a UUID makes.
INT_KEYS: Final = frozenset(
    {
        *("cluster_id", "pid", "sentinel", "monitor", "pusher"),
        *("task_q_size", "done_q_size", "reincarnations"),
    }
)
DATETIME_KEYS: Final = frozenset(("tob", "timestamp"))
TEXT_KEYS: Final = frozenset(("host",))
LIST_KEYS: Final = frozenset(("workers",))  # a slot per item, in the list's order
UUID_KEYS: Final = frozenset(("cluster_id",))  # django-q >= 1.2; before, the pid (an int)

# How a slot's bytes are read back: as the unpickler reads them.
UINT: Final = 0  # BININT1, BININT2: unsigned little-endian
SINT: Final = 1  # BININT: signed little-endian
DATETIME_BYTES: Final = 2  # datetime(<SHORT_BINBYTES>, ...), protocol 3 and later
DATETIME_LATIN1: Final = 3  # datetime(<SHORT_BINSTRING>, ...), Python 2, a str (latin1)
TEXT_UTF8: Final = 4  # BINUNICODE*: UTF-8, surrogates passed, as the unpickler decodes it
TEXT_LATIN1: Final = 5  # a Python 2 str (SHORT_BINSTRING, BINSTRING), decoded as latin1
UUID_INT: Final = 6  # the LONG1/LONG4 payload a UUID's BUILD sets as its `int`: signed

DATETIME_STATE_LEN: Final = 10  # y y m d H M S us us us


class Slot(NamedTuple):
    key: str  # the state dict's key whose value these bytes alone make
    start: int  # where the bytes are in the pickle
    width: int
    kind: int  # UINT, SINT, DATETIME_BYTES or DATETIME_LATIN1


class Flow(NamedTuple):
    slots: tuple[Slot, ...]
    unread: tuple[tuple[int, int], ...]  # (start, width) of the bytes the analysis never read


class _GiveUp(Exception):
    """The pickle does something the model does not follow exactly."""


# A node is one object the unpickler would make, as a list (cheaper than an instance; it
# runs over a hundred-odd opcodes): [kind, pushes, value, start, width, items, builds].
# pushes: once when made, again per BINGET or DUP. value: a _CALL's (callable, arguments),
# a _GLOBAL's (module, name) or None if they were not both literal text, an _INT's slot kind.
# start, width: where a literal's bytes are. A text's value is its text once read (`_text`):
# only a key's or a global's name is, the rest are values like any other.
# items: a _TUPLE's or _LIST's items, a _DICT's keys and values in turn. builds: the states
# BUILD gave the object, or None.
_KIND, _PUSHES, _VALUE, _START, _WIDTH, _ITEMS, _BUILDS = range(7)
# _STR8 is a Python 2 str, which our unpickler decodes as latin1.
# _LONG is a LONG1/LONG4 literal, _NEW a NEWOBJ's object.
_STR, _STR8, _INT, _BYTES, _LONG, _TUPLE, _LIST, _DICT, _GLOBAL, _CALL, _NEW, _OTHER = range(12)
_TEXT = (_STR, _STR8)

_Node = list[Any]


def _op(name: str) -> int:
    code: bytes = getattr(pickle, name)
    return code[0]


# Opcode -> (payload width, slot kind) of the int opcodes; (prefix width, node kind) of the
# length-prefixed literals; the fixed payload width of the other objects we need not follow.
_INTS = {_op("BININT1"): (1, UINT), _op("BININT2"): (2, UINT), _op("BININT"): (4, SINT)}
_LITERALS = {
    _op("BINUNICODE"): (4, _STR),
    _op("BINUNICODE8"): (8, _STR),
    _op("SHORT_BINSTRING"): (1, _STR8),
    _op("BINSTRING"): (4, _STR8),
    _op("SHORT_BINBYTES"): (1, _BYTES),
    _op("BINBYTES"): (4, _BYTES),
    _op("BINBYTES8"): (8, _BYTES),
    _op("LONG1"): (1, _LONG),
    _op("LONG4"): (4, _LONG),
}
_OTHERS = {_op("NONE"): 0, _op("NEWTRUE"): 0, _op("NEWFALSE"): 0, _op("BINFLOAT"): 8}
_COUNTED_TUPLES = {_op("TUPLE1"): 1, _op("TUPLE2"): 2, _op("TUPLE3"): 3}
_MEMOIZE, _BINGET, _BINPUT = _op("MEMOIZE"), _op("BINGET"), _op("BINPUT")
_SHORT_BINUNICODE = _op("SHORT_BINUNICODE")
_MARK, _POP, _POP_MARK, _DUP = _op("MARK"), _op("POP"), _op("POP_MARK"), _op("DUP")
_PROTO, _FRAME, _STOP, _GLOBAL_OP = _op("PROTO"), _op("FRAME"), _op("STOP"), _op("GLOBAL")
_STACK_GLOBAL, _REDUCE, _NEWOBJ, _BUILD = (
    _op("STACK_GLOBAL"), _op("REDUCE"), _op("NEWOBJ"), _op("BUILD")
)  # fmt: skip
_EMPTY_TUPLE, _EMPTY_LIST, _EMPTY_DICT = _op("EMPTY_TUPLE"), _op("EMPTY_LIST"), _op("EMPTY_DICT")
_APPEND, _SETITEM = _op("APPEND"), _op("SETITEM")
# The opcodes that take the items above the innermost MARK.
_TUPLE_OP, _LIST_OP, _DICT_OP = _op("TUPLE"), _op("LIST"), _op("DICT")
_APPENDS, _SETITEMS = _op("APPENDS"), _op("SETITEMS")
_FROM_MARK = frozenset((_TUPLE_OP, _LIST_OP, _DICT_OP, _APPENDS, _SETITEMS, _POP_MARK))
_INTO_BELOW_MARK = frozenset((_APPENDS, _SETITEMS))  # into the object below the MARK
_INTO = frozenset((_APPEND, _SETITEM))  # into the object below their argument(s)
_CALLS = frozenset((_REDUCE, _NEWOBJ))
_EMPTIES = frozenset((_EMPTY_DICT, _EMPTY_LIST, _EMPTY_TUPLE))
_VALUE_LITERALS = frozenset((_BYTES, _LONG))  # literals whose bytes the analysis never reads


def _text(data: bytes, node: _Node) -> str:
    """A _STR's or _STR8's text, decoded as our unpickler decodes it; marked as read."""
    if node[_VALUE] is None:
        raw = data[node[_START] : node[_START] + node[_WIDTH]]
        if node[_KIND] == _STR8:
            node[_VALUE] = raw.decode(PY2_STR_ENCODING)
        else:
            node[_VALUE] = raw.decode("utf-8", "surrogatepass")  # as the unpickler decodes it
    text: str = node[_VALUE]
    return text


def _run(data: bytes, values: list[tuple[int, int]], texts: list[_Node]) -> _Node:
    """Run the opcodes on nodes instead of objects (one branch per opcode); the node STOP
    returns. `values` gets the payloads of the numbers and bytes literals, `texts` the
    text nodes.

    Stricter than the unpickler: nothing may reach below the innermost MARK (its "fence"),
    STOP must leave no MARK open, an in-place opcode's target must be of its kind, and
    BINPUT may not skip a memo index (no writer does)."""
    stack: list[_Node] = []
    marks: list[int] = []
    memo: list[_Node] = []  # MEMOIZE puts at len(memo), as the unpickler does
    fence = 0
    i, end = 0, len(data)
    while i < end:
        op = data[i]
        i += 1
        # Roughly by how often each occurs in a Stat pickle.
        if op == _MEMOIZE:
            if len(stack) <= fence:
                raise _GiveUp
            memo.append(stack[-1])
        elif op == _SHORT_BINUNICODE:
            width = data[i]
            i += 1 + width
            node: _Node = [_STR, 1, None, i - width, width, None, None]
            stack.append(node)
            texts.append(node)
        elif op in _INTS:
            width, slot_kind = _INTS[op]
            stack.append([_INT, 1, slot_kind, i, width, None, None])
            values.append((i, width))
            i += width
        elif op == _BINGET:
            index = data[i]
            if index >= len(memo):
                raise _GiveUp
            node = memo[index]
            node[_PUSHES] += 1
            stack.append(node)
            i += 1
        elif op == _STACK_GLOBAL:
            if len(stack) - fence < 2:
                raise _GiveUp
            name = stack.pop()
            module = stack.pop()
            literal = module[_KIND] in _TEXT and name[_KIND] in _TEXT
            names = (_text(data, module), _text(data, name)) if literal else None
            stack.append([_GLOBAL, 1, names, 0, 0, None, None])
        elif op in _LITERALS:
            prefix, kind = _LITERALS[op]
            start = i + prefix
            width = int.from_bytes(data[i:start], "little")
            i = start + width
            node = [kind, 1, None, start, width, None, None]
            stack.append(node)
            if kind in _VALUE_LITERALS:
                values.append((start, width))
            else:
                texts.append(node)
        elif op in _COUNTED_TUPLES:
            count = _COUNTED_TUPLES[op]
            if len(stack) - fence < count:
                raise _GiveUp
            items = stack[-count:]
            del stack[-count:]
            stack.append([_TUPLE, 1, None, 0, 0, items, None])
        elif op in _CALLS:
            if len(stack) - fence < 2:
                raise _GiveUp
            args = stack.pop()
            func = stack.pop()
            kind = _CALL if op == _REDUCE else _NEW
            stack.append([kind, 1, (func, args), 0, 0, None, None])
        elif op in _EMPTIES:
            kind = _DICT if op == _EMPTY_DICT else _LIST if op == _EMPTY_LIST else _TUPLE
            stack.append([kind, 1, None, 0, 0, [], None])
        elif op == _MARK:
            fence = len(stack)
            marks.append(fence)
        elif op in _FROM_MARK:
            if not marks:
                raise _GiveUp
            items = stack[fence:]
            del stack[fence:]
            marks.pop()
            fence = marks[-1] if marks else 0
            if op in _INTO_BELOW_MARK:
                if len(stack) <= fence or (op == _SETITEMS and len(items) % 2):
                    raise _GiveUp
                target = stack[-1]
                if target[_KIND] != (_DICT if op == _SETITEMS else _LIST):
                    raise _GiveUp
                target[_ITEMS].extend(items)
            elif op == _DICT_OP:
                if len(items) % 2:
                    raise _GiveUp
                stack.append([_DICT, 1, None, 0, 0, items, None])
            elif op != _POP_MARK:
                kind = _TUPLE if op == _TUPLE_OP else _LIST
                stack.append([kind, 1, None, 0, 0, items, None])
        elif op in _INTO:
            count = 2 if op == _SETITEM else 1
            if len(stack) - fence <= count:
                raise _GiveUp
            target = stack[-1 - count]
            if target[_KIND] != (_DICT if op == _SETITEM else _LIST):
                raise _GiveUp
            target[_ITEMS].extend(stack[-count:])
            del stack[-count:]
        elif op == _BUILD:
            if len(stack) - fence < 2:
                raise _GiveUp
            state = stack.pop()
            target = stack[-1]
            if target[_BUILDS] is None:
                target[_BUILDS] = []
            target[_BUILDS].append(state)
        elif op == _BINPUT:
            index = data[i]
            if len(stack) <= fence or index > len(memo):
                raise _GiveUp
            if index == len(memo):
                memo.append(stack[-1])
            else:
                memo[index] = stack[-1]
            i += 1
        elif op in _OTHERS:
            width = _OTHERS[op]
            stack.append([_OTHER, 1, None, i, width, None, None])
            if width:
                values.append((i, width))
            i += width
        elif op == _GLOBAL_OP:  # Python 2: "module\nname\n", which the unpickler reads as UTF-8
            module_end = data.index(b"\n", i)
            name_end = data.index(b"\n", module_end + 1)
            names = (data[i:module_end].decode(), data[module_end + 1 : name_end].decode())
            stack.append([_GLOBAL, 1, names, 0, 0, None, None])
            i = name_end + 1
        elif op == _PROTO:
            i += 1
        elif op == _FRAME:
            i += 8
        elif op == _POP:
            if marks and marks[-1] == len(stack):  # as the unpickler: POP takes a MARK on top
                marks.pop()
                fence = marks[-1] if marks else 0
            elif len(stack) > fence:
                stack.pop()
            else:
                raise _GiveUp
        elif op == _DUP:
            if len(stack) <= fence:
                raise _GiveUp
            stack[-1][_PUSHES] += 1
            stack.append(stack[-1])
        elif op == _STOP and i == end and not marks and stack:
            return stack[-1]
        else:
            raise _GiveUp
    raise _GiveUp  # no STOP, or a literal's length ran past the end


def _used_once(node: _Node) -> bool:
    """Pushed once (never fetched by BINGET nor DUPed) and never BUILT: it is only where
    it was put."""
    return node[_PUSHES] == 1 and node[_BUILDS] is None


def _int_slot(key: str, value: _Node) -> Slot | None:
    if value[_KIND] != _INT or not _used_once(value):
        return None
    return Slot(key, value[_START], value[_WIDTH], value[_VALUE])


def _datetime_slot(key: str, value: _Node) -> Slot | None:
    """`datetime(<10 bytes>[, tzinfo])`, the call, its arguments and its bytes each used
    only there: the slot is the 10 bytes."""
    if value[_KIND] != _CALL or not _used_once(value):
        return None
    func, args = value[_VALUE]
    if func[_KIND] != _GLOBAL or func[_VALUE] is None:
        return None
    if ALLOWED_GLOBALS.get(func[_VALUE]) is not datetime:
        return None
    if args[_KIND] != _TUPLE or not _used_once(args) or not 1 <= len(args[_ITEMS]) <= 2:
        return None
    state = args[_ITEMS][0]
    if not _used_once(state) or state[_WIDTH] != DATETIME_STATE_LEN:
        return None
    if state[_KIND] == _BYTES:
        return Slot(key, state[_START], DATETIME_STATE_LEN, DATETIME_BYTES)
    if state[_KIND] == _STR8:  # decoded as the unpickler decodes it (record_memo._read)
        return Slot(key, state[_START], DATETIME_STATE_LEN, DATETIME_LATIN1)
    return None


def _text_slot(key: str, value: _Node) -> Slot | None:
    if value[_KIND] not in _TEXT or not _used_once(value):
        return None
    kind = TEXT_UTF8 if value[_KIND] == _STR else TEXT_LATIN1
    return Slot(key, value[_START], value[_WIDTH], kind)


def _list_slots(key: str, value: _Node) -> list[Slot] | None:
    """A list of ints, the list and each item used only there: a slot per item. The list's
    length is structure (its items' opcodes), so it is the same in every pickle of the flow."""
    if value[_KIND] != _LIST or not _used_once(value):
        return None
    slots = [_int_slot(key, item) for item in value[_ITEMS]]
    if not all(slots):
        return None
    return [slot for slot in slots if slot is not None]


def _uuid_slot(data: bytes, key: str, value: _Node) -> Slot | None:
    """`UUID.__new__(UUID)` then one BUILD with `{"int": <LONG>}` (UUID.__getstate__ of a
    uuid4, as Django Q pickles its cluster id): the object, the empty arguments, the state
    and its number each used only there. UUID.__setstate__ sets `int` from that number and
    nothing else of the record's, so the slot is the LONG's payload."""
    if value[_KIND] != _NEW or value[_PUSHES] != 1:
        return None
    builds = value[_BUILDS]
    if builds is None or len(builds) != 1:
        return None
    func, args = value[_VALUE]
    if func[_KIND] != _GLOBAL or func[_VALUE] is None:
        return None
    if ALLOWED_GLOBALS.get(func[_VALUE]) is not UUID:
        return None
    if args[_KIND] != _TUPLE or not _used_once(args) or args[_ITEMS]:
        return None
    state = builds[0]
    if state[_KIND] != _DICT or not _used_once(state) or len(state[_ITEMS]) != 2:
        return None
    name, number = state[_ITEMS]
    if name[_KIND] not in _TEXT or _text(data, name) != "int":
        return None
    if number[_KIND] != _LONG or not _used_once(number):
        return None
    return Slot(key, number[_START], number[_WIDTH], UUID_INT)


def analyse(data: bytes) -> Flow | None:
    """The slots of `data`, a pickle that passed the opcode walk and decoded to a Stat, and
    the bytes the analysis ignored; None where anything about it is not plain (see above)."""
    values: list[tuple[int, int]] = []
    texts: list[_Node] = []
    try:
        result = _run(data, values, texts)
    except (_GiveUp, ValueError, IndexError):  # ValueError: a global's name that does not decode
        return None
    builds = result[_BUILDS]
    if builds is None or len(builds) != 1:
        return None
    state = builds[0]
    if state[_KIND] != _DICT or not _used_once(state):
        return None
    keys, items = state[_ITEMS][::2], state[_ITEMS][1::2]
    if any(key[_KIND] not in _TEXT for key in keys):
        return None  # a key we cannot name
    try:
        names = [_text(data, key) for key in keys]
    except ValueError:  # text that does not decode (nor would it unpickle)
        return None
    if len(set(names)) < len(names):
        return None  # a key set twice: its first value is not what the state holds
    slots: list[Slot] = []
    for name, value in zip(names, items, strict=True):
        if name in LIST_KEYS:
            slots.extend(_list_slots(name, value) or ())
            continue
        if name in INT_KEYS:
            slot = _int_slot(name, value)
            if slot is None and name in UUID_KEYS:
                slot = _uuid_slot(data, name, value)
        elif name in DATETIME_KEYS:
            slot = _datetime_slot(name, value)
        elif name in TEXT_KEYS:
            slot = _text_slot(name, value)
        else:
            continue
        if slot is not None:
            slots.append(slot)
    # What was never read: the numbers and bytes, and the texts that are neither a key nor a
    # global's name (a host, a status): a pickle that differs from this one only there is
    # analysed the same, so a fleet's clusters share few analyses between them.
    unread = values + [(node[_START], node[_WIDTH]) for node in texts if node[_VALUE] is None]
    return Flow(tuple(slots), tuple(sorted(unread)))
