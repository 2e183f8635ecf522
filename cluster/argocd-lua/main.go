// argocd-lua runs an Argo CD resource health check the way Argo CD's application controller
// does (util/lua in argoproj/argo-cd): gopher-lua with the standard libraries skipped, then only
// the package, base and table libraries opened, the live object as the global `obj` (JSON
// integers as Lua numbers), a one-second time limit, and the returned table's `status` and
// `message` read back; a status outside Argo CD's set becomes Unknown. Argo CD adds a "safe" os
// module (time and date only) that a script must require; it is offered the same way here.
// No string, math or io library: a script that calls string.format fails here as it does there.
//
//	argocd-lua SCRIPT < object.json    prints {"status": ..., "message": ...}; exit 1 on a Lua error
//
// Built by cluster/build.sh into the control plane's cache (never committed).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

var validStatus = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

// decodeValue follows Argo CD's: maps to hash tables, slices to sequences, numbers to LNumber.
func decodeValue(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return lua.LNumber(i)
		}
		f, _ := v.Float64()
		return lua.LNumber(f)
	case string:
		return lua.LString(v)
	case []interface{}:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]interface{}:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

func safeOsLoader(l *lua.LState) int {
	mod := l.SetFuncs(l.NewTable(), map[string]lua.LGFunction{
		"time": func(l *lua.LState) int { l.Push(lua.LNumber(time.Now().Unix())); return 1 },
	})
	l.Push(mod)
	return 1
}

func run(script string, obj map[string]interface{}) (map[string]string, error) {
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
			return nil, err
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	out := map[string]string{}
	for _, key := range []string{"status", "message"} {
		switch v := table.RawGetString(key).(type) {
		case lua.LString:
			out[key] = string(v)
		case *lua.LNilType:
		default:
			return nil, fmt.Errorf("%s is a %s, not a string", key, v.Type())
		}
	}
	if !validStatus[out["status"]] {
		return map[string]string{"status": "Unknown", "message": "Lua returned an invalid health status"}, nil
	}
	return out, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua SCRIPT < object.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	decoder := json.NewDecoder(os.Stdin)
	decoder.UseNumber()
	var obj map[string]interface{}
	if err := decoder.Decode(&obj); err != nil {
		fmt.Fprintln(os.Stderr, "object:", err)
		os.Exit(2)
	}
	result, err := run(string(script), obj)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(result)
}
