package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// The config struct tag says what a key holds when the json tag alone
// cannot:
//
//	config:"unsupported"   a key of the reference's format this build does
//	                       not act on: present, it loads with a warning
//	config:"record_types"  a map keyed by record type: another key is
//	                       unknown
const (
	tagUnsupported = "unsupported"
	tagRecordTypes = "record_types"
)

var (
	configType      = reflect.TypeFor[Config]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
)

// unknownKeys names the keys of the file (raw, its top-level object) that
// no field of Config takes, at every depth, and the reference's keys this
// build does not act on. Values of the wrong type are not its business:
// decoding reports them.
func unknownKeys(raw map[string]json.RawMessage) []string {
	return objectKeys("", raw, configType)
}

// objectKeys checks the keys of one JSON object against struct type t.
func objectKeys(path string, obj map[string]json.RawMessage, t reflect.Type) []string {
	fields := jsonFields(t)
	var warnings []string
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		name := join(path, k)
		f, ok := fields[k]
		if !ok {
			// encoding/json, here as in the reference, takes a key that
			// matches a field's name ignoring case: it is read, not ignored.
			if folded, found := foldedField(fields, k); found {
				warnings = append(warnings, fmt.Sprintf("config key %q is read as %q (keys match ignoring case)", name, join(path, folded)))
				f, ok = fields[folded], true
			}
		}
		switch {
		case !ok:
			warnings = append(warnings, fmt.Sprintf("config key %q is unknown and is ignored", name))
			continue
		case hasTag(f, tagUnsupported):
			warnings = append(warnings, fmt.Sprintf("config key %q is not supported by this version and is ignored", name))
			continue
		}
		warnings = append(warnings, valueKeys(name, obj[k], f)...)
	}
	return warnings
}

// valueKeys checks the objects inside one field's value.
func valueKeys(path string, raw json.RawMessage, f reflect.StructField) []string {
	t := f.Type
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil // a value of its own format
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return nil
		}
		return objectKeys(path, obj, t)
	case reflect.Map:
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return nil
		}
		var warnings []string
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			if hasTag(f, tagRecordTypes) && !knownRecordTypes[k] {
				warnings = append(warnings, fmt.Sprintf("config key %q is unknown and is ignored (record types: %s)", join(path, k), recordTypeList))
				continue
			}
			warnings = append(warnings, valueKeys(join(path, k), obj[k], reflect.StructField{Type: t.Elem()})...)
		}
		return warnings
	case reflect.Slice, reflect.Array:
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) != nil {
			return nil
		}
		var warnings []string
		for i, v := range list {
			warnings = append(warnings, valueKeys(fmt.Sprintf("%s[%d]", path, i), v, reflect.StructField{Type: t.Elem()})...)
		}
		return warnings
	}
	return nil
}

// jsonFields are a struct type's fields by JSON name (json:"-" left out).
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	fields := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = f
		}
	}
	return fields
}

// foldedField is the JSON name in fields that key matches ignoring case,
// as encoding/json matches it when no name is equal.
func foldedField(fields map[string]reflect.StructField, key string) (string, bool) {
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if strings.EqualFold(name, key) {
			return name, true
		}
	}
	return "", false
}

// hasKeyFold reports whether obj has key, matched ignoring case as
// decoding matches it.
func hasKeyFold(obj map[string]json.RawMessage, key string) bool {
	for k := range obj {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}

func hasTag(f reflect.StructField, v string) bool {
	return slices.Contains(strings.Split(f.Tag.Get("config"), ","), v)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
