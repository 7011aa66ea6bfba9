package xmppgw

import (
	"encoding/xml"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

const (
	nsMUC        = "http://jabber.org/protocol/muc"
	nsMUCUser    = "http://jabber.org/protocol/muc#user"
	nsSID        = "urn:xmpp:sid:0"
	nsDelay      = "urn:xmpp:delay"
	nsOccupantID = "urn:xmpp:occupant-id:0"
)

// radiosAdvert is the bridge's own presence extension: the radios a bridge
// sends through, so that bridges sharing a room share the mesh.
type radiosAdvert struct {
	XMLName xml.Name      `xml:"urn:sovereign-relay:radios:0 radios"`
	Radios  []advertRadio `xml:"radio"`
}

type advertRadio struct {
	ID   string `xml:"id,attr"`             // the radio's node id
	Mesh string `xml:"mesh,attr,omitempty"` // the operator's name for its mesh
	With string `xml:"with,attr,omitempty"` // node ids of radios on the same mesh, space-separated
}

// maxAdvertRadios bounds what another bridge's presence may name.
const maxAdvertRadios = 16

// MUC status codes we act on.
const (
	statusSelf          = 110
	statusNickAssigned  = 210
	statusBanned        = 301
	statusNickChanged   = 303
	statusKicked        = 307
	statusAffiliation   = 321
	statusMembersOnly   = 322
	statusShutdown      = 332
	statusTechnicalKick = 333
)

type idElem struct {
	ID string `xml:"id,attr"`
	By string `xml:"by,attr,omitempty"`
}

type delayElem struct {
	XMLName xml.Name `xml:"urn:xmpp:delay delay"`
	Stamp   string   `xml:"stamp,attr"`
	From    string   `xml:"from,attr,omitempty"`
}

// outMessage is a groupchat (or chat) message we send.
type outMessage struct {
	XMLName  xml.Name   `xml:"message"`
	ID       string     `xml:"id,attr"`
	To       string     `xml:"to,attr"`
	Type     string     `xml:"type,attr"`
	Body     string     `xml:"body,omitempty"` // none in a reaction
	OriginID *originID  `xml:"urn:xmpp:sid:0 origin-id"`
	Delay    *delayElem `xml:"urn:xmpp:delay delay,omitempty"`
	// A mesh tapback or reply, as a XEP-0444 reaction or a XEP-0461 reply
	// with its XEP-0428 fallback (see relate.go).
	Reactions *reactionsElem `xml:"urn:xmpp:reactions:0 reactions"`
	Reply     *replyElem     `xml:"urn:xmpp:reply:0 reply"`
	Fallback  *fallbackElem  `xml:"urn:xmpp:fallback:0 fallback"`
	Store     *storeHint     `xml:"urn:xmpp:hints store"`
}

type originID struct {
	ID string `xml:"id,attr"`
}

// joinPresence asks to enter a room without any history: nothing said
// before we joined is replayed into the mesh.
type joinPresence struct {
	XMLName xml.Name `xml:"presence"`
	ID      string   `xml:"id,attr"`
	To      string   `xml:"to,attr"`
	Type    string   `xml:"type,attr,omitempty"`
	// Status says how the bridge's radios are, for people in the room.
	Status string `xml:"status,omitempty"`
	X      *mucX  `xml:"http://jabber.org/protocol/muc x"`
	// Radios says which radios this bridge sends through (omitted in a
	// presence that leaves the room).
	Radios *radiosAdvert `xml:"urn:sovereign-relay:radios:0 radios"`
}

type mucX struct {
	History struct {
		MaxStanzas int `xml:"maxstanzas,attr"`
	} `xml:"history"`
}

// inMessage is a message as received.
type inMessage struct {
	XMLName    xml.Name      `xml:"message"`
	ID         string        `xml:"id,attr"`
	From       jid.JID       `xml:"from,attr"`
	Type       string        `xml:"type,attr"`
	Bodies     []string      `xml:"body"`
	Delay      *delayElem    `xml:"urn:xmpp:delay delay"`
	OriginID   *idElem       `xml:"urn:xmpp:sid:0 origin-id"`
	StanzaIDs  []idElem      `xml:"urn:xmpp:sid:0 stanza-id"`
	OccupantID *idElem       `xml:"urn:xmpp:occupant-id:0 occupant-id"`
	Error      *stanza.Error `xml:"error"`
	// ReceiptRequest: the sender of a one-to-one message asks for a
	// XEP-0184 receipt.
	ReceiptRequest *struct{} `xml:"urn:xmpp:receipts request"`
	received       time.Time
	// What it says about another message (relations.go).
	msgExt
}

func (m *inMessage) body() string {
	if len(m.Bodies) == 0 {
		return ""
	}
	return m.Bodies[0]
}

func (m *inMessage) originID() string {
	if m.OriginID != nil {
		return m.OriginID.ID
	}
	return ""
}

// stanzaID is the room's own id for the message; ids claimed by anyone else
// (a client can forge one) are ignored.
func (m *inMessage) stanzaID(room jid.JID) string {
	for _, id := range m.StanzaIDs {
		if by, err := jid.Parse(id.By); err == nil && by.Equal(room) {
			return id.ID
		}
	}
	return ""
}

// inPresence is a presence as received.
type inPresence struct {
	XMLName    xml.Name      `xml:"presence"`
	ID         string        `xml:"id,attr"`
	From       jid.JID       `xml:"from,attr"`
	Type       string        `xml:"type,attr"`
	X          *mucUserX     `xml:"http://jabber.org/protocol/muc#user x"`
	OccupantID *idElem       `xml:"urn:xmpp:occupant-id:0 occupant-id"`
	Radios     *radiosAdvert `xml:"urn:sovereign-relay:radios:0 radios"`
	Error      *stanza.Error `xml:"error"`
}

type mucItem struct {
	Affiliation string `xml:"affiliation,attr"`
	Role        string `xml:"role,attr"`
	JID         string `xml:"jid,attr"` // the occupant's real JID, where the room shows it
	Nick        string `xml:"nick,attr"`
	Reason      string `xml:"reason"`
}

type mucUserX struct {
	Items    []mucItem `xml:"item"`
	Statuses []struct {
		Code int `xml:"code,attr"`
	} `xml:"status"`
	Destroy *struct {
		Reason string `xml:"reason"`
	} `xml:"destroy"`
}

func (p *inPresence) has(code int) bool {
	if p.X == nil {
		return false
	}
	for _, s := range p.X.Statuses {
		if s.Code == code {
			return true
		}
	}
	return false
}

func (p *inPresence) reason() string {
	if p.X == nil {
		return ""
	}
	if p.X.Destroy != nil {
		return p.X.Destroy.Reason
	}
	for _, it := range p.X.Items {
		if it.Reason != "" {
			return it.Reason
		}
	}
	return ""
}
