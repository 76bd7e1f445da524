// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice Test-only contract: exercises every revert shape and emits events for the follower.
contract Probe {
    error TooLow(uint256 given, uint256 minimum);
    error Closed(address caller);

    event Poked(address indexed who, uint256 indexed seq, uint256 value);

    uint256 public count;
    bool public closed;

    function poke(uint256 value) external {
        count += 1;
        emit Poked(msg.sender, count, value);
    }

    function needAtLeast(uint256 value) external {
        if (value < 10) revert TooLow(value, 10);
        count += 1;
    }

    function requireNonZero(uint256 value) external {
        require(value != 0, "value must be non-zero");
        count += 1;
    }

    function divide(uint256 a, uint256 b) external returns (uint256) {
        count += 1;
        return a / b;
    }

    function quote(uint256 value) external pure returns (uint256) {
        if (value < 10) revert TooLow(value, 10);
        return value * 2;
    }

    function close() external {
        if (closed) revert Closed(msg.sender);
        closed = true;
    }
}
