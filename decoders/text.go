package decoders

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// textEngine reads delimited text: CSV per RFC 4180 (encoding/csv does the
// quoting), TOA5 and similar. A frame is one line or a whole file; a file
// may start with a header block that names the columns.
type textEngine struct {
	sep      rune
	quoting  bool
	trim     bool
	comment  rune
	skip     int
	header   *headerConfig
	match    *regexp.Regexp
	columns  []string
	textCols map[string]bool
	missing  map[string]bool
}

// noHeader and noUnits are the header and units of a frame without a
// header block; shared, expressions only read them.
var (
	noHeaderVal, noUnitsVal any = [][]string{}, map[string]any{}
	// noHeaderVars are the frame variables of a frame without a header
	// block: shared, never written (Decode only reads parsed.vars).
	noHeaderVars = map[string]any{"header": noHeaderVal, "units": noUnitsVal}
)

var defaultMissing = []string{"NAN", "NaN", "nan", "INF", "+INF", "-INF", "Inf", "-Inf", ""}

func (c *compiler) textEngine(tc *textConfig, path string) (engine, map[string]bool, []string) {
	e := &textEngine{sep: ',', quoting: true, trim: tc.TrimSpace, skip: tc.SkipLines, columns: tc.Columns,
		textCols: map[string]bool{}, missing: map[string]bool{}}
	switch tc.Separator {
	case "":
	case `\t`, "\t", "tab":
		e.sep = '\t'
	default:
		r, n := utf8.DecodeRuneInString(tc.Separator)
		if n != len(tc.Separator) || r == '"' || r == '\n' || r == '\r' || r == utf8.RuneError {
			c.d.errAt(path+".separator", "separator must be one character other than a quote or a line break, not %q", tc.Separator)
		} else {
			e.sep = r
		}
	}
	switch tc.Quoting {
	case "", "rfc4180":
	case "none":
		e.quoting = false
	default:
		c.d.errAt(path+".quoting", "quoting must be rfc4180 or none, not %q", tc.Quoting)
	}
	if tc.Comment != "" {
		r, n := utf8.DecodeRuneInString(tc.Comment)
		if n != len(tc.Comment) || r == e.sep {
			c.d.errAt(path+".comment", "comment must be one character other than the separator")
		} else {
			e.comment = r
		}
	}
	if tc.SkipLines < 0 {
		c.d.errAt(path+".skip_lines", "skip_lines cannot be negative")
	}
	if h := tc.Header; h != nil {
		e.header = h
		if h.Lines < 1 {
			c.d.errAt(path+".header.lines", "header.lines must be at least 1")
		}
		if h.Names < 0 || h.Names > h.Lines {
			c.d.errAt(path+".header.names", "header.names must be a line of the header block (1..%d) or 0", h.Lines)
		}
		if h.Units < 0 || h.Units > h.Lines {
			c.d.errAt(path+".header.units", "header.units must be a line of the header block (1..%d) or 0", h.Lines)
		}
		if h.Match != "" {
			re, err := regexp.Compile(h.Match)
			if err != nil {
				c.d.errAt(path+".header.match", "bad regular expression: %v", err)
			}
			e.match = re
		}
	}
	seen := map[string]bool{}
	for i, col := range tc.Columns {
		if col == "" || seen[col] {
			c.d.errAt(fmt.Sprintf("%s.columns[%d]", path, i), "column names must be unique and not empty")
		}
		seen[col] = true
	}
	for _, col := range tc.TextColumns {
		e.textCols[col] = true
	}
	miss := tc.Missing
	if miss == nil {
		miss = defaultMissing
	}
	for _, m := range miss {
		e.missing[m] = true
	}
	vars := []string{"header", "units", "line"}
	if len(tc.Columns) > 0 {
		names := map[string]bool{}
		for _, col := range tc.Columns {
			names[col] = true
		}
		return e, names, vars
	}
	if e.header == nil || e.header.Names == 0 {
		c.d.errAt(path, "text needs columns, or a header block with a names line")
	}
	return e, nil, vars
}

// textLine is one CSV record and where it starts.
type textLine struct {
	fields []string
	off    int
	line   int
}

func (e *textEngine) parse(payload []byte) (*parsed, error) {
	data := payload
	base, lineNo := 0, 1
	// Lines skipped before anything else.
	for i := 0; i < e.skip; i++ {
		j := bytes.IndexByte(data, '\n')
		if j < 0 {
			return nil, perr(base+len(data), "frame ends inside the %d lines to skip", e.skip)
		}
		data, base, lineNo = data[j+1:], base+j+1, lineNo+1
	}
	lines, err := e.split(data, base, lineNo)
	if err != nil {
		return nil, err
	}
	p := &parsed{vars: noHeaderVars}
	names := e.columns
	if h := e.header; h != nil && len(lines) > 0 {
		present := true
		if e.match != nil {
			first := data
			if j := bytes.IndexAny(first, "\r\n"); j >= 0 {
				first = first[:j]
			}
			present = e.match.Match(first)
		}
		if present {
			if len(lines) < h.Lines {
				return nil, perr(base+len(data), "frame ends inside the %d-line header", h.Lines)
			}
			hdr := make([][]string, h.Lines)
			for i := range hdr {
				hdr[i] = lines[i].fields
			}
			p.vars = map[string]any{"header": hdr, "units": noUnitsVal}
			if h.Names > 0 {
				names = hdr[h.Names-1]
				seen := map[string]bool{}
				for _, n := range names {
					if n == "" || seen[n] {
						return nil, perr(lines[h.Names-1].off, "header line %d: column names must be unique and not empty", lines[h.Names-1].line)
					}
					seen[n] = true
				}
			}
			if h.Units > 0 && names != nil {
				units := map[string]any{}
				for i, u := range hdr[h.Units-1] {
					if i < len(names) {
						units[names[i]] = u
					}
				}
				p.vars["units"] = units
			}
			lines = lines[h.Lines:]
		}
	}
	if len(names) == 0 && len(lines) > 0 {
		return nil, perr(lines[0].off, "no column names: the frame has no header and the decoder no columns")
	}
	for _, l := range lines {
		r := newRecord(l.off, "line "+strconv.Itoa(l.line))
		r.vars["line"] = l.line
		if len(l.fields) != len(names) {
			r.err = perr(l.off, "%d fields, want %d (%s…)", len(l.fields), len(names), names[0])
			p.records = append(p.records, r)
			continue
		}
		for i, cell := range l.fields {
			name := names[i]
			if e.trim {
				cell = strings.TrimSpace(cell)
			}
			switch {
			case e.missing[cell]:
				why := fmt.Sprintf("missing value %q", cell)
				if cell == "" {
					why = "empty"
				}
				r.setMissing(name, why)
			case e.textCols[name]:
				r.vars[name] = cell
			default:
				if v, text, ok := parseNumber(cell); ok {
					r.setNumber(name, v, text)
				} else {
					r.vars[name] = cell
				}
			}
		}
		p.records = append(p.records, r)
	}
	return p, nil
}

// split cuts the text into records. Lines end in LF, CRLF or a bare CR;
// blank lines are ignored.
func (e *textEngine) split(data []byte, base, lineNo int) ([]textLine, error) {
	// encoding/csv knows LF and CRLF; a bare CR (serial devices) becomes LF
	// here, byte for byte, so offsets stay right.
	if bytes.IndexByte(data, '\r') >= 0 {
		data = bytes.Clone(data)
		for i := range data {
			if data[i] == '\r' && (i+1 >= len(data) || data[i+1] != '\n') {
				data[i] = '\n'
			}
		}
	}
	if !e.quoting {
		return e.splitPlain(data, base, lineNo), nil
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.Comma = e.sep
	r.Comment = e.comment
	r.FieldsPerRecord = -1
	r.ReuseRecord = false
	var out []textLine
	for {
		start := int(r.InputOffset())
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, perr(base+int(r.InputOffset()), "line %d column %d: %v", lineNo-1+pe.Line, pe.Column, pe.Err)
			}
			return nil, perr(base+start, "%v", err)
		}
		line, _ := r.FieldPos(0)
		// csv skips blank lines; find where this record really starts.
		for start < len(data) && (data[start] == '\n' || data[start] == '\r') {
			start++
		}
		out = append(out, textLine{fields: rec, off: base + start, line: lineNo - 1 + line})
	}
}

func (e *textEngine) splitPlain(data []byte, base, lineNo int) []textLine {
	var out []textLine
	off := 0
	for n := lineNo; off < len(data); n++ {
		j := bytes.IndexByte(data[off:], '\n')
		end := len(data)
		if j >= 0 {
			end = off + j
		}
		line := strings.TrimSuffix(string(data[off:end]), "\r")
		if line != "" && (e.comment == 0 || !strings.HasPrefix(line, string(e.comment))) {
			out = append(out, textLine{fields: strings.Split(line, string(e.sep)), off: base + off, line: n})
		}
		off = end + 1
	}
	return out
}

var _ engine = (*textEngine)(nil)
