package fakeagent

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// defaultNVRAMPatterns are IPA's DEFAULT_CLEAN_UEFI_NVRAM_MATCH_PATTERNS:
// every entry on a disk partition, and shim or GRUB loaders.
var defaultNVRAMPatterns = []string{`^HD\(`, `shim.*\.efi`, `grub.*\.efi`}

var cleanUEFINVRAMArgsInfo = map[string]any{
	"match_patterns": argInfo(`Json blob contains a list of regex patterns where any UEFI NVRAM entry matching that pattern will be deleted. Default value is '["^HD\\(", "shim.*\\.efi", "grub.*\\.efi"]'`, false),
}

// cleanUEFINVRAM is IPA's clean_uefi_nvram (clean and deploy step): it
// removes the machine's UEFI boot entries whose device path matches one of
// the patterns (case-insensitive; IPA's defaults without args).
func (a *Agent) cleanUEFINVRAM(raw json.RawMessage) (any, error) {
	var args struct {
		MatchPatterns json.RawMessage `json:"match_patterns"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &args); err != nil {
			return nil, fmt.Errorf("args: %w", err)
		}
	}
	patterns := defaultNVRAMPatterns
	if len(args.MatchPatterns) > 0 && string(args.MatchPatterns) != "null" {
		patterns = nil
		if err := json.Unmarshal(args.MatchPatterns, &patterns); err != nil {
			return nil, &CommandError{Type: "InvalidCommandParamsError", Code: 400, Message: "Invalid command parameters",
				Details: "The match_patterns must be a list of strings: " + string(args.MatchPatterns)}
		}
	}
	var res []*regexp.Regexp
	for _, p := range patterns {
		re, err := regexp.Compile("(?i)" + p)
		if err != nil {
			return nil, &CommandError{Type: "InvalidCommandParamsError", Code: 400, Message: "Invalid command parameters",
				Details: fmt.Sprintf("The match_patterns must be a list of strings: %q is not a regular expression: %v", p, err)}
		}
		res = append(res, re)
	}
	removed := []string{}
	err := a.cfg.Hardware.UpdateHardware(func(hw *Hardware) {
		kept := hw.UEFIBootEntries[:0:0]
		for _, e := range hw.UEFIBootEntries {
			match := false
			for _, re := range res {
				if re.MatchString(e.DevicePath()) {
					match = true
					break
				}
			}
			if match {
				removed = append(removed, e.Label+" "+e.DevicePath())
			} else {
				kept = append(kept, e)
			}
		}
		hw.UEFIBootEntries = kept
	})
	if err != nil {
		return nil, fmt.Errorf("update the UEFI NVRAM: %w", err)
	}
	a.event("UEFI NVRAM cleaned", "removed", removed)
	return map[string]any{"removed": removed}, nil
}
