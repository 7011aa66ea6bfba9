package serialgw

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
)

// radioNodeFile keeps the node id of the radio last handshaken, the
// gateway id of the radio side's topics: after a restart the status and
// the per-radio send topic are known before the radio answers.
const radioNodeFile = "radio-node"

// loadRadioNode reads the kept gateway id; "" when none is kept. A file
// that does not hold a node id is reported, and no id is known.
func loadRadioNode(stateDir string) (string, error) {
	if stateDir == "" {
		return "", nil
	}
	path := filepath.Join(stateDir, radioNodeFile)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("radio node id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if num, err := mesh.ParseNodeID(id); err != nil || num == 0 || mesh.NodeID(num) != id {
		return "", fmt.Errorf("radio node id: %s does not hold a node id (!xxxxxxxx): %q", path, id)
	}
	return id, nil
}

// KeptGatewayID returns the gateway id the radio side kept in stateDir
// (the node id of the radio it last handshook with), "" when none is kept:
// the daemon names the radio side's will by it before the link starts.
func KeptGatewayID(stateDir string) string {
	id, _ := loadRadioNode(stateDir)
	return id
}

// saveRadioNode keeps the gateway id, whole or not at all (temp file and
// rename): a torn id would name the wrong topics after a power cut.
func saveRadioNode(stateDir, id string) error {
	if stateDir == "" {
		return nil
	}
	tmp, err := os.CreateTemp(stateDir, ".radio-node-*")
	if err != nil {
		return fmt.Errorf("radio node id: %w", err)
	}
	_, err = tmp.WriteString(id + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(stateDir, radioNodeFile))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("radio node id: %w", err)
	}
	if d, err := os.Open(stateDir); err == nil {
		_ = d.Sync() // the rename itself survives a power cut
		d.Close()
	}
	return nil
}
