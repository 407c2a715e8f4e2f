//go:build !race

package tcpchan

const raceEnabled = false
