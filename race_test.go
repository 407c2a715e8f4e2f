//go:build race

package tcpchan

const raceEnabled = true
