// Runs an Argo CD health script on objects the way Argo CD does, in gopher-lua, Argo CD's own
// Lua interpreter (Debian's golang-github-yuin-gopher-lua-dev; GOPATH mode, no module proxy):
// a state without the standard libraries, then package, base and table opened (Argo CD's
// util/lua runLua; its reduced os library is left out, the script does not use it), the
// object decoded from JSON into the global `obj` as Argo CD's decodeValue does, the script
// run, and the returned table's status and message printed.
//
//	go run health.go <health.lua> <object.json>...
//
// Prints one JSON line per object: {"input": ..., "status": ..., "message": ...}, or
// {"input": ..., "error": ...} when the script fails.
package main

import (
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"

	lua "github.com/yuin/gopher-lua"
)

type result struct {
	Input   string `json:"input"`
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: health <health.lua> <object.json>...")
		os.Exit(2)
	}
	script, err := ioutil.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	for _, input := range os.Args[2:] {
		r := run(string(script), input)
		if err := out.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

func run(script, input string) result {
	r := result{Input: input}
	raw, err := ioutil.ReadFile(input)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(raw, &obj); err != nil {
		r.Error = err.Error()
		return r
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			r.Error = err.Error()
			return r
		}
	}
	l.SetGlobal("obj", decode(l, obj))
	if err := l.DoString(script); err != nil {
		r.Error = err.Error()
		return r
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		r.Error = "the script returned " + l.Get(-1).Type().String() + ", not a table"
		return r
	}
	r.Status = lua.LVAsString(table.RawGetString("status"))
	r.Message = lua.LVAsString(table.RawGetString("message"))
	return r
}

// decode is Argo CD's decodeValue for what encoding/json produces.
func decode(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(decode(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), decode(l, item))
		}
		return t
	}
	return lua.LNil
}
