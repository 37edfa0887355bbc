// Command go_oracle answers, with Go's own standard library, the questions goml_async's
// scoring must answer the way go-ml does: where Go's regexp matches, what strings.ToLower
// returns, and what strconv.ParseFloat accepts.
//
// It reads one JSON request on stdin and writes one JSON answer on stdout:
//
//	{"patterns": [...], "texts": [...], "lower": [...], "floats": [...], "orbits": [...]}
//	-> {"spans": [[[[start, end], ...] per text] per pattern],
//	    "lower": [...], "floats": [{"ok": bool, "bits": "hex of the float64 bits"}, ...],
//	    "orbits": [the unicode.SimpleFold orbit of each one-character string, starting there],
//	    "unicode": unicode.Version}
//
// Spans are byte offsets of regexp.FindAllStringIndex.
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

type request struct {
	Patterns []string `json:"patterns"`
	Texts    []string `json:"texts"`
	Lower    []string `json:"lower"`
	Floats   []string `json:"floats"`
	Orbits   []string `json:"orbits"`
}

type float struct {
	OK   bool   `json:"ok"`
	Bits string `json:"bits"`
}

type answer struct {
	Spans   [][][][]int `json:"spans"`
	Lower   []string    `json:"lower"`
	Floats  []float     `json:"floats"`
	Orbits  []string    `json:"orbits"`
	Unicode string      `json:"unicode"`
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad request:", err)
		os.Exit(2)
	}
	ans := answer{Spans: [][][][]int{}, Lower: []string{}, Floats: []float{}, Orbits: []string{}, Unicode: unicode.Version}
	for _, pattern := range req.Patterns {
		re := regexp.MustCompile(pattern)
		perText := make([][][]int, len(req.Texts))
		for i, text := range req.Texts {
			spans := re.FindAllStringIndex(text, -1)
			if spans == nil {
				spans = [][]int{}
			}
			perText[i] = spans
		}
		ans.Spans = append(ans.Spans, perText)
	}
	for _, text := range req.Lower {
		ans.Lower = append(ans.Lower, strings.ToLower(text))
	}
	for _, text := range req.Floats {
		value, err := strconv.ParseFloat(text, 64)
		ans.Floats = append(ans.Floats, float{err == nil, fmt.Sprintf("%016x", math.Float64bits(value))})
	}
	for _, text := range req.Orbits {
		start := []rune(text)[0]
		orbit := []rune{start}
		for r := unicode.SimpleFold(start); r != start; r = unicode.SimpleFold(r) {
			orbit = append(orbit, r)
		}
		ans.Orbits = append(ans.Orbits, string(orbit))
	}
	if err := json.NewEncoder(os.Stdout).Encode(ans); err != nil {
		fmt.Fprintln(os.Stderr, "cannot write the answer:", err)
		os.Exit(2)
	}
}
