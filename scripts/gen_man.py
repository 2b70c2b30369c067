#!/usr/bin/env python3
"""Generate one man3 page per AMIO_API function from the public headers.

Usage: gen_man.py --out DIR --version X.Y.Z [--date YYYY-MM-DD]
                  [--strerror src/strerror.c] HEADER...
(--strerror: amio_strerror()'s words for a code the comment gives no reason for)

Each declaration's comment follows the house format (STYLE.md, "Headers"):
a summary sentence, the description, then the tagged parts
    Returns:   ...   (may list error codes, one per indented line)
    Errors:    ...   (comma-separated codes, each with its reason in parens)
    Ownership: ...
    Thread:    ...
A "---- Title ----" section comment with text after its title (amio.h's
Timers and Channels) becomes the NOTES of every function in that section.

Pages: NAME, LIBRARY, SYNOPSIS, DESCRIPTION, RETURN VALUE, ERRORS, THREADS,
[NOTES], SEE ALSO (amio(7), the functions the comment names, the functions of
the same header section). A part the comment lacks is written as
"Not documented in the header." which the check_man test rejects.
Every *.3 file in DIR is replaced. Standard library only.
"""
import argparse
import os
import re
import sys

UNDOCUMENTED = "Not documented in the header."
TAGS = ("Returns", "Errors", "Ownership", "Thread")
TAG_RE = re.compile(r"(?:(?<=\s)|^)(Returns|Errors|Ownership|Thread):", re.M)
CODE_RE = r"-(?:E[A-Z0-9]+|errno)"
ITEM_RE = re.compile(r"^\s+(%s(?:/%s)*)(?:\s+(.*))?$" % (CODE_RE, CODE_RE))
FUNC_RE = re.compile(r"\bamio_[a-z0-9_]+\b")
STOP_PARAMS = {"frame", "line", "out", "buf", "events"}  # also plain words

LIBRARIES = {
    "amio.h": ("amio event core", "libamio", "amio"),
    "version.h": ("amio event core", "libamio", "amio"),
    "frame.h": ("amio framing library, libc only", "libamio_frame", "amio-frame"),
}


class Decl:
    def __init__(self, name, ret, params, comment, header, section, notes):
        self.name = name
        self.ret = ret
        self.params = params  # [(type, name)]
        self.comment = comment  # list of lines, comment markers removed
        self.header = header  # e.g. amio/frame.h
        self.section = section
        self.notes = notes  # list of lines, or []


def comment_lines(text):
    """The lines of a /* ... */ block without the comment markers."""
    body = text[2:-2]
    out = []
    for i, line in enumerate(body.split("\n")):
        if i > 0:
            line = re.sub(r"^\s*\*(?!/)", "", line, count=1)
            if line.startswith(" "):
                line = line[1:]
        else:
            line = line.strip()
        out.append(line.rstrip())
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


def section_title(lines):
    """(title, body lines) of a section comment, or None."""
    if not lines:
        return None
    m = re.match(r"^-{2,}\s*(.*?)\s*-*$", lines[0])
    if m and m.group(1):  # "---- Timers ----"
        return m.group(1), lines[1:]
    if re.match(r"^-{8,}$", lines[0]) and len(lines) >= 2:  # rule, title, rule
        rest = [l for l in lines[1:] if not re.match(r"^-{8,}$", l)]
        if rest:
            return rest[0].split(":")[0].strip(), rest[1:]
    return None


def parse_params(text):
    text = " ".join(text.split())
    if text in ("", "void"):
        return []
    params = []
    for p in text.split(","):
        p = p.strip()
        m = re.match(r"^(.*?)([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?$", p)
        if not m or not m.group(1).strip():
            params.append((p, ""))
        else:
            params.append((m.group(1).rstrip() + (" " if not m.group(1).endswith("*") else ""),
                           m.group(2) + (m.group(3) or "")))
    return params


def parse_header(path, header_name):
    src = open(path, encoding="utf-8").read()
    decls = []
    last_comment = None  # (lines, end offset)
    section, notes = "", []
    token = re.compile(r"/\*.*?\*/|AMIO_API\b[^;{]*;|^#[^\n]*", re.S | re.M)
    for m in token.finditer(src):
        t = m.group(0)
        if t.startswith("/*"):
            lines = comment_lines(t)
            st = section_title(lines)
            if st:
                section = st[0]
                notes = [l for l in st[1] if l.strip()] and st[1]
                last_comment = None
            else:
                last_comment = (lines, m.end())
            continue
        if t.startswith("#"):
            last_comment = None
            continue
        dm = re.match(r"AMIO_API\s+(.*?)\b(amio_[A-Za-z0-9_]*)\s*\((.*)\)\s*;$", t, re.S)
        if not dm:
            sys.exit("gen_man.py: %s: cannot parse declaration: %s" % (path, " ".join(t.split())))
        comment = []
        if last_comment and not src[last_comment[1]:m.start()].strip():
            comment = last_comment[0]
        ret = " ".join(dm.group(1).split())
        if not ret.endswith("*"):
            ret += " "
        decls.append(Decl(dm.group(2), ret, parse_params(dm.group(3)), comment, header_name,
                          section, notes))
        last_comment = None
    return decls


def split_fields(lines):
    """{'': description, 'Returns': ..., ...}: each a list of lines."""
    text = "\n".join(lines)
    fields = {}
    marks = [(m.start(), m.end(), m.group(1)) for m in TAG_RE.finditer(text)]
    first = marks[0][0] if marks else len(text)
    fields[""] = text[:first].rstrip().split("\n") if text[:first].strip() else []
    for i, (s, e, tag) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        part = text[e:end].strip("\n")
        part = part[1:] if part.startswith(" ") else part
        fields.setdefault(tag, [])
        fields[tag] += part.rstrip().split("\n")
    return fields


def first_sentence(text):
    """The text up to the first full stop outside parentheses."""
    depth = 0
    for i, c in enumerate(text):
        if c in "([":
            depth += 1
        elif c in ")]":
            depth = max(0, depth - 1)
        elif c == "." and depth == 0 and (i + 1 == len(text) or text[i + 1].isspace()):
            if re.search(r"\b(e\.g|i\.e|etc|vs)$", text[:i]):
                continue
            return text[: i + 1]
    return text


def without_parens(text):
    """text without its parenthesised remarks (a call's "()" stays)."""
    out, depth = [], 0
    for i, c in enumerate(text):
        if c == "(" and text[i + 1:i + 2] != ")":
            depth += 1
        elif c == ")" and depth > 0 and text[i - 1] != "(":
            depth -= 1
        elif depth == 0:
            out.append(c)
    return re.sub(r"\s+([,.;:])", r"\1", " ".join("".join(out).split()))


class Formatter:
    """Inline roff for comment text: escapes, bold functions and codes,
    italic parameters."""

    def __init__(self, functions, params):
        self.functions = functions
        self.params = [p for p in params if p]

    def inline(self, text):
        text = text.replace("\\", "\\e")
        out = []
        pat = re.compile(r"(\*?)(\b[A-Za-z_][A-Za-z0-9_]*\b)(\(\))?|(-(?:E[A-Z0-9]+\b|errno\b|\d))")
        pos = 0
        for m in pat.finditer(text):
            out.append(text[pos:m.start()])
            pos = m.end()
            if m.group(4):
                code = m.group(4)
                if code[1:].isdigit():
                    out.append("\\-" + code[1:])
                else:
                    out.append("\\fB\\-%s\\fP" % code[1:])
                continue
            star, word, call = m.group(1), m.group(2), m.group(3) or ""
            after = text[m.end():m.end() + 2]
            if word in self.functions:
                out.append("%s\\fB%s\\fP%s" % (star, word, call))
            elif re.match(r"^AMIO_[A-Z0-9_]+$", word):
                out.append("%s\\fB%s\\fP%s" % (star, word, call))
            elif word in self.params and not call and (
                    word not in STOP_PARAMS or star or after.startswith((":", "->", "["))):
                out.append("\\fI%s%s\\fP" % (star, word))
            else:
                out.append(m.group(0))
        out.append(text[pos:])
        return "".join(out)

    def line(self, text):
        s = self.inline(text.strip())
        return "\\&" + s if s.startswith((".", "'")) else s


def blocks(lines):
    """Split lines into ('p', [lines]) prose, ('code', [lines]) and
    ('item', tag, [lines]) list items (tag may be '')."""
    res = []
    for line in lines:
        if not line.strip():
            res.append(("blank",))
            continue
        if line.startswith("\t"):
            if res and res[-1][0] == "code":
                res[-1][1].append(line[1:])
            else:
                res.append(("code", [line[1:]]))
            continue
        m = ITEM_RE.match(line)
        indent = len(line) - len(line.lstrip())
        if m and indent <= 4:
            res.append(("item", m.group(1), [m.group(2) or ""]))
        elif indent > 4 and res and res[-1][0] == "item":
            res[-1][2].append(line.strip())
        elif 0 < indent <= 4 and res and res[-1][0] == "item":
            res.append(("item", "", [line.strip()]))  # an item that is not a code
        elif res and res[-1][0] == "p":
            res[-1][1].append(line)
        else:
            res.append(("p", [line]))
    return res


def render_text(fmt, lines, out):
    """Description-style text: paragraphs, code examples, item lists."""
    first = True
    in_list = False
    for b in blocks(lines):
        if b[0] == "blank":
            first = True
            continue
        if b[0] == "code":
            out += [".PP", ".in +4n", ".EX"]
            out += ["\\&" + l.replace("\\", "\\e").replace("\t", "        ") for l in b[1]]
            out += [".EE", ".in"]
            first = True
            continue
        if b[0] == "item":
            if not in_list:
                out.append(".RS")
                in_list = True
            out += [".TP", ".B " + b[1].replace("-", "\\-") if b[1] else ".B \\&"]
            out += [fmt.line(l) for l in b[2] if l.strip()] or ["\\&"]
            continue
        if in_list:
            out.append(".RE")
            in_list = False
        if first:
            out.append(".PP")
            first = False
        out += [fmt.line(l) for l in b[1]]
    if in_list:
        out.append(".RE")


def split_top(text, seps=",;"):
    parts, depth, cur = [], 0, []
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        if c in seps and depth == 0 and not (c == "," and text[i + 1:i + 2].isdigit()):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def error_items(text):
    """Items (codes, reason) of an inline 'Errors:' text; codes '' for prose."""
    items = []
    for piece in split_top(" ".join(text.split())):
        piece = re.sub(r"^(or|and)\s+", "", piece).rstrip(".")
        m = re.match(r"^(%s(?:/%s)*)(.*)$" % (CODE_RE, CODE_RE), piece)
        if m and (not m.group(2) or m.group(2)[0] in " (:"):
            reason = m.group(2).strip()
            if reason.startswith("(") and reason.endswith(")"):
                reason = reason[1:-1]
            reason = re.sub(r"^:\s*", "", reason)
            items.append((m.group(1), reason))
        else:
            items.append(("", piece))
    return items


def inline_codes(text):
    """Codes named in running text, with the reason that follows them."""
    flat = " ".join(text.split())
    items = []
    for m in re.finditer(r"(%s)" % CODE_RE, flat):
        rest = flat[m.end():]
        reason = ""
        if rest.startswith(" ("):
            depth, j = 0, 1
            for j, c in enumerate(rest[1:], 1):
                depth += (c == "(") - (c == ")")
                if depth == 0:
                    break
            reason = rest[2:j]
        else:
            r = re.match(r"^\s+(if|when)\s+([^;,.]+)", rest)
            if r:
                reason = r.group(1) + " " + r.group(2)
        if m.group(1) not in [c for c, _ in items]:
            items.append((m.group(1), reason))
    return items


def sentence(text, params=()):
    """text as a sentence: capitalised unless it opens with an identifier,
    ending in a full stop instead of the ';' or ', or' of a list."""
    text = re.sub(r"(\s*[;,])?(\s+(or|and))?\s*$", "", text.strip())
    if not text:
        return text
    word = re.match(r"^[A-Za-z0-9_]*", text).group(0)
    rest = text[len(word):len(word) + 1]
    if len(word) > 1 and word.isalpha() and word not in params and rest not in ("(", "[", "-"):
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", ":", "!", "?")) else text + "."


def page(d, functions, strerror, version, date):
    fmt = Formatter(functions, [p[1] for p in d.params])
    fields = split_fields(d.comment)
    desc = fields.get("", [])
    lib, soname, pc = LIBRARIES.get(os.path.basename(d.header), LIBRARIES["amio.h"])
    flat = " ".join(" ".join(desc).split())
    summary = first_sentence(flat) if flat else ""
    name_line = without_parens(summary).rstrip(".").strip()
    if name_line and not (len(name_line) > 1 and name_line[1].isupper()):
        name_line = name_line[0].lower() + name_line[1:]
    o = ['.\\" Generated by scripts/gen_man.py from include/%s: edit the header comment.'
         % d.header,
         '.TH %s 3 "%s" "amio %s" "amio Manual"' % (d.name, date, version),
         ".SH NAME",
         "%s \\- %s" % (d.name, fmt.inline(name_line) if name_line else UNDOCUMENTED.lower())]
    o += [".SH LIBRARY",
          "%s (\\fI%s\\fP, \\fI\\-l%s\\fP; \\fIpkg\\-config \\-\\-libs %s\\fP)"
          % (lib, soname, soname[3:], pc)]
    o += [".SH SYNOPSIS", ".nf", ".B #include <%s>" % d.header, ".PP"]
    head = d.ret + d.name + "("
    if not d.params:
        o.append('.B "%svoid);"' % head)
    for i, (ptype, pname) in enumerate(d.params):
        lead = head if i == 0 else " " * len(head)
        end = ");" if i == len(d.params) - 1 else ","
        if pname:
            o.append('.BI "%s%s" %s %s' % (lead, ptype, pname, end))
        else:
            o.append('.B "%s%s%s"' % (lead, ptype, end))
    o.append(".fi")

    o.append(".SH DESCRIPTION")
    if desc:
        render_text(fmt, desc, o)
    else:
        o += [".PP", UNDOCUMENTED]
    if fields.get("Ownership"):
        o += [".PP", "\\fBOwnership:\\fP"]
        o += [fmt.line(l) for l in fields["Ownership"] if l.strip()]

    # RETURN VALUE: the Returns text; its error lists are in ERRORS.
    o.append(".SH RETURN VALUE")
    ret_lines = fields.get("Returns", [])
    listed = []
    if ret_lines:
        prose, run = [], []

        def flush_run():
            if run:
                codes = [c for c, _ in run if c] or ["-errno"]
                txt = ", ".join(codes[:-1]) + (" or " if len(codes) > 1 else "") + codes[-1]
                prose.append(txt + " (see ERRORS)\x01")
                listed.extend(run)
                run.clear()

        for b in blocks(ret_lines):
            if b[0] == "item":
                run.append((b[1], " ".join(b[2])))
            elif b[0] == "p":
                flush_run()
                prose += b[1]
            elif b[0] == "code":
                flush_run()
        flush_run()
        prose = [l for l in prose if l.strip()]
        for i, l in enumerate(prose):  # "; or, ..." continues the sentence
            if l.endswith("\x01"):
                nxt = prose[i + 1].strip() if i + 1 < len(prose) else ""
                prose[i] = l[:-1] + (";" if nxt[:1].islower() else ".")
        if prose:
            prose[0] = "\x00" + prose[0].strip()
        o.append(".PP")
        o += [fmt.line(l).replace("\x00", "\\fB%s\\fP() returns " % d.name) for l in prose]
        if fields.get("Errors") and any(c for c, _ in error_items(" ".join(fields["Errors"]))):
            o.append("On failure it returns a negative errno value, listed under ERRORS.")
    elif d.ret.strip() == "void":
        o += [".PP", "\\fB%s\\fP() returns no value." % d.name]
    elif summary:
        o += [".PP", fmt.line(summary)]
    else:
        o += [".PP", UNDOCUMENTED]

    o.append(".SH ERRORS")
    items = []
    if fields.get("Errors"):
        err_lines = fields["Errors"]
        for b in blocks(err_lines):
            if b[0] == "item":
                items.append((b[1], " ".join(b[2])))
            elif b[0] == "p":
                items += error_items(" ".join(b[1]))
    items += listed
    if not fields.get("Errors") and not listed and ret_lines:
        items = inline_codes(" ".join(ret_lines))
    if not items:  # the house style lists every error a function can return
        o += [".PP", "None."]
    for codes, reason in items:
        if not codes:
            o += [".PP", fmt.line(sentence(reason, fmt.params))]
            continue
        first = codes.split("/")[0]
        if not reason and first in strerror:
            reason = strerror[first]
        o += [".TP", ".B " + ", ".join(c.replace("-", "\\-") for c in codes.split("/"))]
        o.append(fmt.line(sentence(reason, fmt.params)) if reason else "\\&")

    o.append(".SH THREADS")
    thread = [l for l in fields.get("Thread", []) if l.strip()]
    o.append(".PP")
    o += [fmt.line(sentence(" ".join(thread)))] if thread else [UNDOCUMENTED]
    if d.notes and any(l.strip() for l in d.notes):
        o += [".SH NOTES", ".PP", "%s:" % fmt.inline(d.section)]
        render_text(fmt, d.notes, o)

    refs = []
    for f in FUNC_RE.findall("\n".join(d.comment)):
        if f in functions and f != d.name and f not in refs:
            refs.append(f)
    for f, sec in functions.items():
        if sec == (d.header, d.section) and f != d.name and f not in refs:
            refs.append(f)
    o += [".SH SEE ALSO", ".BR amio (7)%s" % ("," if refs else "")]
    for i, f in enumerate(refs):
        o.append(".BR %s (3)%s" % (f, "," if i < len(refs) - 1 else ""))
    return "\n".join(o) + "\n"


def read_strerror(path):
    """-ECODE -> amio_strerror()'s words, from src/strerror.c (optional)."""
    res = {}
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return res
    for m in re.finditer(r'case\s+-(E[A-Z0-9]+):\s*return\s+((?:"[^"]*"\s*)+);', text):
        s = "".join(re.findall(r'"([^"]*)"', m.group(2)))
        s = re.sub(r"^-E[A-Z0-9]+:\s*", "", s)
        res["-" + m.group(1)] = s
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--date", default="")
    ap.add_argument("--strerror", default="")
    ap.add_argument("headers", nargs="+")
    a = ap.parse_args()
    decls = []
    for h in a.headers:
        norm = h.replace(os.sep, "/")
        m = re.search(r"(?:^|/)include/(.+)$", norm)
        name = m.group(1) if m else os.path.basename(h)
        decls += parse_header(h, name)
    functions = {d.name: (d.header, d.section) for d in decls}
    strerror = read_strerror(a.strerror) if a.strerror else {}
    os.makedirs(a.out, exist_ok=True)
    for f in os.listdir(a.out):
        if f.endswith(".3"):
            os.remove(os.path.join(a.out, f))
    for d in decls:
        with open(os.path.join(a.out, d.name + ".3"), "w", encoding="utf-8") as f:
            f.write(page(d, functions, strerror, a.version, a.date))
    return 0


if __name__ == "__main__":
    sys.exit(main())
