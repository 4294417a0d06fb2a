"""A session's output and the exceptions that stop a block: `CappedWriter`, the stream a block's
stdout and stderr go to (it keeps the head and the tail, and stops the block past max_output_mb),
its `buffer` (`_ByteAdapter`), and the BaseExceptions the session worker raises in a block.
"""

from __future__ import annotations


class _Interrupted(BaseException):
    """Raised in the block's main thread when the client asks it to stop (wall time)."""


class _CpuExceeded(BaseException):
    """Raised in the block's main thread on SIGXCPU (RLIMIT_CPU soft limit)."""


class _OutputLimit(BaseException):
    """Raised by the capped writer once a block has printed more than max_output_mb."""


class CappedWriter:
    """A text stream that keeps the head and the tail of what is written, and counts the rest."""

    encoding = "utf-8"
    errors = "strict"
    newlines = None
    closed = False
    line_buffering = False

    def __init__(self, keep_chars, max_chars):
        self.head_cap = keep_chars // 2
        self.tail_cap = keep_chars - self.head_cap
        self.max_chars = max_chars
        self.head = []
        self.head_n = 0
        self.tail = []
        self.tail_n = 0
        self.total = 0
        self.exceeded = False
        self.buffer = _ByteAdapter(self)

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        if not n:
            return 0
        self.total += n
        start = 0  # slices only, never a copy of a huge string
        room = self.head_cap - self.head_n
        if room > 0:
            part = s[:room]
            self.head.append(part)
            self.head_n += len(part)
            start = len(part)
        rest = n - start
        if rest > 0 and self.tail_cap:
            if rest >= self.tail_cap:
                self.tail = [s[n - self.tail_cap :]]
                self.tail_n = self.tail_cap
            else:
                self.tail.append(s[start:] if start else s)
                self.tail_n += rest
                if self.tail_n > 4 * self.tail_cap + 64:
                    joined = "".join(self.tail)[-self.tail_cap :]
                    self.tail, self.tail_n = [joined], len(joined)
        if self.total > self.max_chars:
            self.exceeded = True
            raise _OutputLimit()
        return n

    def getvalue(self):
        head = "".join(self.head)
        tail = "".join(self.tail)
        if self.total <= self.head_cap + self.tail_cap:
            return head + tail
        tail = tail[-self.tail_cap :] if self.tail_cap else ""
        cut = self.total - len(head) - len(tail)
        return f"{head}\n...[{cut} characters cut]...\n{tail}"

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def readable(self):
        return False

    def writable(self):
        return True

    def seekable(self):
        return False

    def fileno(self):
        import io

        raise io.UnsupportedOperation("the sandbox's stdout has no file descriptor")

    def close(self):
        pass


class _ByteAdapter:
    """`sys.stdout.buffer`: bytes are decoded as UTF-8, invalid sequences replaced."""

    closed = False

    def __init__(self, writer):
        import codecs

        self._writer = writer
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, b):
        self._writer.write(self._dec.decode(bytes(b)))
        return len(b)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True
