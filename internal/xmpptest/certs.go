package xmpptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is a throwaway CA and one server certificate, written as PEM files.
type pki struct {
	caFile   string // CA certificate
	certFile string // server certificate followed by the CA certificate
	keyFile  string // server key (SEC 1 "EC PRIVATE KEY")
	pemFile  string // certFile + keyFile in one file (ejabberd's certfiles)
	pool     *x509.CertPool
}

// makePKI creates a P-256 CA and a server certificate for the given DNS
// names plus 127.0.0.1, valid for two days, and writes them into dir.
// leafName is the base name of the server cert and key files.
func makePKI(dir, leafName string, dnsNames ...string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "xmpptest throwaway CA", Organization: []string{"xmpptest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA cert: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: dnsNames[0], Organization: []string{"xmpptest"}},
		DNSNames:     dnsNames,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create server cert: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}

	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})

	p := &pki{
		caFile:   filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, leafName+".crt"),
		keyFile:  filepath.Join(dir, leafName+".key"),
		pemFile:  filepath.Join(dir, leafName+".pem"),
		pool:     x509.NewCertPool(),
	}
	p.pool.AddCert(caCert)
	chain := append(append([]byte{}, leafPEM...), caPEM...)
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{p.caFile, caPEM, 0o644},
		{p.certFile, chain, 0o644},
		{p.keyFile, keyPEM, 0o600},
		{p.pemFile, append(append([]byte{}, chain...), keyPEM...), 0o600},
	} {
		if err := os.WriteFile(f.name, f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err)
	}
	return n
}
