"""Final-answer extraction and integer conversion for model solutions.

Pure Python, no engine, no files. The policy (documented in docs/answers_and_votes.md):

* `extract_answer(text)` returns the content of the LAST non-empty `\\boxed{...}` / `\\fbox{...}`
  (nested braces honoured; `\\boxed 5` without braces accepted), stripped of surrounding
  whitespace, `$`, and trailing punctuation, otherwise as written. A box always wins over a
  sentence, even one that comes after it. Only when the text has no box does it fall back to the
  last "final answer is N" / "answer: N" style sentence. There is no "last number in the text"
  fallback: on a truncated trace it would invent an answer, and a wrong vote costs more than a
  missing one.
* `to_integer(answer)` turns that string into an int where the answer is an integer (leading
  zeros, signs, `42.0`, thousands separators, `\\frac{84}{2}`, `2^{10}`, units, degree and
  percent marks, a `\\text{}` wrapper, a single `x =` prefix) and returns None for anything
  else (fractions that do not divide, decimals, expressions, tuples, text). It returns Python's
  exact int, which may exceed int64: `answer_int64` is the variant for an int64 column.
"""

from __future__ import annotations

import math
import numbers
import re

__all__ = [
    "ANSWER_MIN",
    "ANSWER_MAX",
    "extract_answer",
    "box_spans",
    "to_integer",
    "answer_int64",
    "in_range",
    "printed_integer",
]

ANSWER_MIN = 0
ANSWER_MAX = 99999
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# longest digit string we convert (CPython refuses > 4300 digits by default; AIMO needs 5)
_MAX_DIGITS = 4000
# largest power we evaluate in `2^{10}`-style answers: result kept below 2**_MAX_POW_BITS
_MAX_POW_BITS = 256

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _matching_brace(text: str, open_at: int) -> int:
    """Index of the `}` closing the `{` at `open_at`, or -1 when it is never closed."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":  # an escaped brace `\{` or `\}` does not count
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every closed `\\boxed`/`\\fbox`, in order.

    An unclosed `\\boxed{12` (a cut-off trace) is skipped. `\\boxed 5` and `\\boxed5` take one
    token up to whitespace, `$`, `}` or a backslash.
    """
    out = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            j = _matching_brace(text, i)
            if j >= 0:
                out.append((m.start(), j + 1, text[i + 1 : j]))
            continue
        tok = re.match(r"[^\s$}\\]+", text[i:])
        if tok and (i > m.end() or tok.group(0)[0].isdigit()):
            out.append((m.start(), i + tok.end(), tok.group(0)))
    return out


# What may stand between two boxes that together give one (set) answer: `\boxed{1}, \boxed{2}`,
# `\boxed{-2} \quad \text{and} \quad \boxed{1}`, `\(\boxed{1}\) and \(\boxed{-2}\)`.
_CONNECTOR_NOISE = re.compile(
    r"\\(?:text|textbf|mathrm|mbox)\s*\{|\\q?quad|\\[,;:! ()\[\]]|[{}$,;&\s]|\band\b|\bor\b"
)
_MAX_CONNECTOR = 40


def _is_connector(gap: str) -> bool:
    return len(gap) <= _MAX_CONNECTOR and not _CONNECTOR_NOISE.sub("", gap).strip(".")


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    ia, ib = to_integer(a), to_integer(b)
    return ia is not None and ia == ib


_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n|<\|")
_FALLBACK_RE = re.compile(
    r"(?i)\b(?:final\s+answer|answer)\b(?:\*\*)?[^\n.$]{0,80}?(?:\bis\b|:|=)(?:\*\*)?"
)
_MAX_FALLBACK_LEN = 80


def _fallback(text: str) -> str | None:
    """The value after the last usable "final answer is X" / "answer: X" marker."""
    matches = list(_FALLBACK_RE.finditer(text))
    for m in reversed(matches):
        rest = text[m.end() :].lstrip(" *\t")
        if rest.startswith("$"):
            close = rest.find("$", 1) if not rest.startswith("$$") else rest.find("$$", 2)
            value = rest[: close + (2 if rest.startswith("$$") else 1)] if close > 0 else rest
        elif rest.startswith("\\("):
            close = rest.find("\\)")
            value = rest[: close + 2] if close > 0 else rest
        else:
            end = _SENTENCE_END.search(rest)
            value = rest[: end.start()] if end else rest
            # "Final Answer: The volume of $ABCD$ is 120" -> the part after the last " is "
            parts = re.split(r"\bis\b", value)
            if len(parts) > 1:
                value = parts[-1]
        value = _strip_outer(value)
        if value and len(value) <= _MAX_FALLBACK_LEN:
            return value
    return None


def _strip_outer(s: str) -> str:
    """Strip whitespace, surrounding math delimiters, markdown bold and trailing punctuation."""
    s = s.strip()
    prev = None
    while s != prev:
        prev = s
        s = s.strip().strip("*").strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left) : len(s) - len(right)].strip()
        s = s.rstrip(" .,;:!")
        if s.startswith("$") and "$" not in s[1:]:
            s = s[1:]
        if s.endswith("$") and "$" not in s[:-1] and not s.endswith("\\$"):
            s = s[:-1]
    return s.strip()


def extract_answer(text: str | None) -> str | None:
    """The final answer of a solution `text`, as written, or None.

    The last non-empty `\\boxed{}`/`\\fbox{}` wins; without one, the last "final answer is X" or
    "answer: X" sentence. Empty boxes (`\\boxed{}` echoed from an instruction) are ignored.
    Boxes joined to the last one only by connectors (`,`, `and`, `or`, `\\quad`, `$`) form one
    answer: equal values collapse to one (`\\boxed{4} or \\boxed{004}` -> "4"), different ones are
    returned joined by ", " (`\\boxed{1}, \\boxed{2}` -> "1, 2"), which is not an integer.
    """
    if not text:
        return None
    if "boxed" in text or "fbox" in text:
        boxes = [(a, b, _strip_outer(c)) for a, b, c in box_spans(text)]
        boxes = [box for box in boxes if box[2]]
        if boxes:
            group = [boxes[-1]]
            for box in reversed(boxes[:-1]):
                if not _is_connector(text[box[1] : group[0][0]]):
                    break
                group.insert(0, box)
            values = []
            for _, _, v in group:
                if not any(_same(v, w) for w in values):
                    values.append(v)
            return values[0] if len(values) == 1 else ", ".join(values)
    return _fallback(text)


# ---------------------------------------------------------------------------------------------
# integer conversion

_TEXT_CMDS = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|hbox|operatorname)"
    r"\s*\{([^{}]*)\}"
)
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~|\\thinspace|\\enspace")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|°|\\degree|\^\s*\{\s*o\s*\}")
_PERCENT = re.compile(r"\\%|%|\\percent")
_UNIT_TAIL = re.compile(r"(?:\s+[A-Za-z]{2,}\.?(?:\s*\^\s*\{?[23]\}?|[²³])?)+$")
_VAR_PREFIX = re.compile(r"^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*")
_INT_RE = re.compile(r"[+-]?\d+")
_DEC_RE = re.compile(r"([+-]?)(\d*)\.(\d*)")
_SCI_RE = re.compile(r"([+-]?)(\d+)(?:\.(\d*))?[eE]([+-]?\d+)")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACE_GROUPS_RE = re.compile(r"[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_FRAC_RE = re.compile(r"([+-]?)\\[dt]?frac\s*(?:\{([^{}]*)\}|(\d))\s*(?:\{([^{}]*)\}|(\d))")
_SLASH_RE = re.compile(r"([+-]?\d+)\s*/\s*([+-]?\d+)")
_POW_RE = re.compile(r"([+-]?)(\d+)\s*\^\s*(?:\{\s*(\d+)\s*\}|(\d))")


def _int_of_digits(s: str) -> int | None:
    digits = s.lstrip("+-")
    if not digits.isdigit() or len(digits) > _MAX_DIGITS:
        return None
    return int(s)


def _plain_number(s: str) -> int | None:
    """An integer-valued plain number: `042`, `+7`, `-0`, `42.0`, `42.`, `1e3`; else None."""
    if _INT_RE.fullmatch(s):
        return _int_of_digits(s)
    m = _DEC_RE.fullmatch(s)
    if m:
        sign, whole, frac = m.groups()
        if not whole and not frac:
            return None
        if frac.strip("0"):
            return None  # 3.3, 0.5: not an integer
        return _int_of_digits(sign + (whole or "0"))
    m = _SCI_RE.fullmatch(s)
    if m:
        sign, whole, frac, exp = m.groups()
        frac = frac or ""
        exp = int(exp)
        if abs(exp) > _MAX_DIGITS:
            return None
        mant = whole + frac
        shift = exp - len(frac)
        if shift >= 0:
            return _int_of_digits(sign + mant + "0" * shift)
        kept, dropped = mant[:shift], mant[shift:]
        if dropped.strip("0"):
            return None
        return _int_of_digits(sign + (kept or "0"))
    return None


def _number(s: str) -> int | None:
    """Plain numbers plus thousands separators (`1,000`, `1 000`)."""
    s = s.strip()
    if _THOUSANDS_RE.fullmatch(s):
        return _plain_number(s.replace(",", ""))
    if _SPACE_GROUPS_RE.fullmatch(s):
        return _plain_number(s.replace(" ", ""))
    return _plain_number(s)


def _normalise(s: str) -> str:
    s = s.replace("\u2212", "-").replace("\u2013", "-")  # unicode minus, en dash
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = s.replace("\\$", "")  # a dollar sign as a unit
    s = s.replace("{,}", ",")  # 1{,}000
    s = re.sub(r",\s*\\!\s*", ",", s)  # 1,\!000 and 11,\! 111
    s = re.sub(r"(?<=\d)\\[,;: ](?=\d)", "", s)  # 1\,000 (thin space between digit groups)
    s = _SPACING.sub(" ", s)
    for _ in range(3):  # \text{...} and friends: keep the words, drop the command
        s2 = _TEXT_CMDS.sub(lambda m: " " + m.group(1) + " ", s)
        if s2 == s:
            break
        s = s2
    s = _DEGREE.sub(" ", s)
    s = _PERCENT.sub(" ", s)
    s = _strip_outer(s)
    s = re.sub(r"\s+", " ", s).strip()
    return s


def to_integer(answer) -> int | None:
    """The integer value of an answer where it is an integer, else None.

    Accepts an int (returned as is), an integral finite float, or a string as written in a box:
    `"042"` -> 42, `"42.0"` -> 42, `"1,000"` -> 1000, `"\\frac{84}{2}"` -> 42, `"3/2"` -> None,
    `"90^\\circ"` -> 90, `"28\\%"` -> 28, `"15 \\text{ cm}^2"` -> 15, `"x = 7"` -> 7. Negative and
    out-of-range integers are returned (use `in_range` to judge them); the value is exact and may
    exceed int64 (see `answer_int64`).
    """
    if answer is None or isinstance(answer, bool):
        return None
    if isinstance(answer, numbers.Integral):
        return int(answer)
    if isinstance(answer, numbers.Real):
        f = float(answer)
        if math.isfinite(f) and f == int(f):
            return int(f)
        return None
    if not isinstance(answer, str):
        return None
    s = answer.strip()
    if not s or len(s) > 1000:
        return None
    if "boxed" in s or "fbox" in s:
        inner = extract_answer(s)
        if inner is None or inner == s:
            return None
        s = inner
    s = _normalise(s)
    if not s:
        return None
    # one simple variable prefix: "n = 42", "a_{1} = 5" (not "a = 1, b = 2")
    if s.count("=") == 1:
        s = _VAR_PREFIX.sub("", s)
    # trailing unit words: "125 miles", "15 cm^2", "28 percent"; a bare letter is not a unit
    s = _UNIT_TAIL.sub("", s).strip()
    s = s.replace("{", "").replace("}", "") if re.fullmatch(r"[+\-\d{}., ]+", s) else s
    n = _number(s)
    if n is not None:
        return n
    m = _FRAC_RE.fullmatch(s)
    if m:
        sign, num_b, num_d, den_b, den_d = m.groups()
        num = _number(num_b if num_b is not None else num_d)
        den = _number(den_b if den_b is not None else den_d)
        return _divide(sign, num, den)
    m = _SLASH_RE.fullmatch(s)
    if m:
        return _divide("", _number(m.group(1)), _number(m.group(2)))
    m = _POW_RE.fullmatch(s)
    if m:
        sign, base, exp_b, exp_d = m.groups()
        base, exp = int(base), int(exp_b if exp_b is not None else exp_d)
        if base > 1 and exp * math.log2(base) >= _MAX_POW_BITS:
            return None
        v = base**exp
        return -v if sign == "-" else v
    return None


def _divide(sign: str, num: int | None, den: int | None) -> int | None:
    if num is None or den is None or den == 0 or num % den:
        return None
    v = num // den
    return -v if sign == "-" else v


def answer_int64(answer) -> int | None:
    """`to_integer`, but None where the integer does not fit a signed 64-bit column."""
    n = to_integer(answer)
    if n is None or not INT64_MIN <= n <= INT64_MAX:
        return None
    return n


def in_range(n) -> bool:
    """True for an integer in the AIMO3 answer range [0, 99999] (bools and floats are not)."""
    if n is None or isinstance(n, bool) or not isinstance(n, numbers.Integral):
        return False
    return ANSWER_MIN <= int(n) <= ANSWER_MAX


_PRINTED_NUM = re.compile(r"(?<![\w.])[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w])")


def printed_integer(stdout: str | None) -> int | None:
    """The last number a code block printed, where it is an integer; else None.

    The last numeric token of `stdout` (a token inside an identifier such as `x2` does not count)
    decides: `"answer = 250"` -> 250, `"(3, 250)"` -> 250, `"250.0"` -> 250, but
    `"ratio 0.53"` -> None, because the code's final value is then not an integer. Integers too
    long to be an answer (over 4000 digits) give None.
    """
    if not stdout:
        return None
    last = None
    for last in _PRINTED_NUM.finditer(stdout):
        pass
    if last is None:
        return None
    return _plain_number(last.group(0))
