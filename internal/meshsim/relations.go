package meshsim

import "github.com/jshiffer/lora-xmpp-bridge/meshpb"

// TapbackPacket is a tapback from the peer from, as the Meshtastic apps
// send one: a text whose payload is the emoji, with emoji set and
// reply_id naming the packet reacted to.
func (r *Radio) TapbackPacket(from, replyTo uint32, emoji string) *meshpb.MeshPacket {
	p := r.TextPacket(from, emoji)
	p.GetDecoded().ReplyId, p.GetDecoded().Emoji = replyTo, 1
	return p
}

// ReplyPacket is a reply from the peer from: a text with reply_id naming
// the packet replied to, and no emoji.
func (r *Radio) ReplyPacket(from, replyTo uint32, text string) *meshpb.MeshPacket {
	p := r.TextPacket(from, text)
	p.GetDecoded().ReplyId = replyTo
	return p
}
