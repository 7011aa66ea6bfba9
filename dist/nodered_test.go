// Package dist holds what is installed next to the daemon: the systemd
// unit, the udev rule, an example configuration and an example Node-RED
// flow. Its tests check that these agree with the code.
package dist

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

const flowFile = "node-red-flow.json"

// flowNode is the part of a Node-RED node the tests look at.
type flowNode struct {
	ID       string     `json:"id"`
	Type     string     `json:"type"`
	Z        string     `json:"z"`
	Name     string     `json:"name"`
	Topic    string     `json:"topic"`
	Broker   string     `json:"broker"`
	Port     string     `json:"port"`
	Datatype string     `json:"datatype"`
	Func     string     `json:"func"`
	Payload  string     `json:"payload"`
	Wires    [][]string `json:"wires"`
}

func loadFlow(t *testing.T) []flowNode {
	t.Helper()
	b, err := os.ReadFile(flowFile)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []flowNode
	if err := json.Unmarshal(b, &nodes); err != nil {
		t.Fatalf("%s is not a Node-RED flow export (a JSON array of nodes): %v", flowFile, err)
	}
	return nodes
}

// byName returns the flow's node of a type and name.
func byName(t *testing.T, nodes []flowNode, typ, name string) flowNode {
	t.Helper()
	i := slices.IndexFunc(nodes, func(n flowNode) bool { return n.Type == typ && n.Name == name })
	if i < 0 {
		t.Fatalf("the flow has no %s node %q", typ, name)
	}
	return nodes[i]
}

// The example flow imports as Node-RED expects (one tab, unique ids,
// wires and broker references that resolve), talks to the embedded
// broker on localhost:1883, and its MQTT nodes use exactly the bridge's
// topics for the region EU_868: the JSON messages, the node records and
// the results in, the JSON downlink out.
func TestNodeREDFlow(t *testing.T) {
	nodes := loadFlow(t)
	ids := map[string]flowNode{}
	var tabs, brokers []string
	for _, n := range nodes {
		if n.ID == "" || n.Type == "" {
			t.Fatalf("a node without id or type: %+v", n)
		}
		if _, dup := ids[n.ID]; dup {
			t.Errorf("id %s used twice", n.ID)
		}
		ids[n.ID] = n
		switch n.Type {
		case "tab":
			tabs = append(tabs, n.ID)
		case "mqtt-broker":
			brokers = append(brokers, n.ID)
			if n.Broker != "localhost" || n.Port != "1883" {
				t.Errorf("broker %s:%s, want localhost:1883", n.Broker, n.Port)
			}
		}
	}
	if len(tabs) != 1 || len(brokers) != 1 {
		t.Fatalf("%d tabs and %d broker nodes, want one of each", len(tabs), len(brokers))
	}

	root := topics.Root("", "EU_868")
	want := map[string][]string{
		"mqtt in":  {topics.JSONFilter(root, "+"), topics.NodesFilter, topics.JSONResult},
		"mqtt out": {topics.JSONDownlink(root)},
	}
	got := map[string][]string{}
	for _, n := range nodes {
		if n.Type == "tab" || n.Type == "mqtt-broker" {
			continue
		}
		if n.Z != tabs[0] {
			t.Errorf("node %s (%s) is not on the flow's tab", n.ID, n.Type)
		}
		for _, out := range n.Wires {
			for _, to := range out {
				if _, ok := ids[to]; !ok {
					t.Errorf("node %s is wired to %s, which is not in the flow", n.ID, to)
				}
			}
		}
		if n.Type == "mqtt in" || n.Type == "mqtt out" {
			got[n.Type] = append(got[n.Type], n.Topic)
			if n.Broker != brokers[0] {
				t.Errorf("%s node %q uses broker %q", n.Type, n.Name, n.Broker)
			}
		}
		if n.Type == "mqtt in" && n.Datatype != "json" {
			t.Errorf("mqtt in node %q outputs %q, want parsed JSON", n.Name, n.Datatype)
		}
	}
	for typ := range want {
		slices.Sort(want[typ])
		slices.Sort(got[typ])
		if !slices.Equal(got[typ], want[typ]) {
			t.Errorf("%s topics %q, want %q", typ, got[typ], want[typ])
		}
	}

	// The text comes in, the downlink goes out, the result comes in, each
	// through its function to what shows it.
	for _, path := range [][2]string{
		{"mesh messages (JSON)", "show texts with names"},
		{"node records", "remember names"},
		{"send a text", "build sendtext"},
		{"build sendtext", "JSON downlink"},
		{"downlink results", "show the outcome"},
	} {
		from := slices.IndexFunc(nodes, func(n flowNode) bool { return n.Name == path[0] })
		to := slices.IndexFunc(nodes, func(n flowNode) bool { return n.Name == path[1] })
		if from < 0 || to < 0 || len(nodes[from].Wires) == 0 || !slices.Contains(nodes[from].Wires[0], nodes[to].ID) {
			t.Errorf("%q is not wired to %q", path[0], path[1])
		}
	}
	for _, name := range []string{"show texts with names", "show the outcome"} {
		f := byName(t, nodes, "function", name)
		if len(f.Wires) != 1 || len(f.Wires[0]) != 1 || ids[f.Wires[0][0]].Type != "debug" {
			t.Errorf("function %q does not end in a debug node", name)
		}
	}
}
