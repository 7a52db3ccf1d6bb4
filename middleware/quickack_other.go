//go:build !linux

package middleware

func setQuickAck(int) {}
